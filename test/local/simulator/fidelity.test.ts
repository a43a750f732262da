import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSimulator } from '#local/simulator/index.ts';
import { decodeCursor } from '#shared/cursor.ts';
import {
  type HttpCapture,
  readFixtureCapture,
  readSharedCapture,
  sharedCapturesAvailable,
} from '#test/support/captures.ts';
import { type PageBody, request, type SimResponse } from './http.ts';

const ISO_MS_Z = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let sim: Awaited<ReturnType<typeof startSimulator>>;
beforeAll(async () => {
  sim = await startSimulator({ port: 0, latencyMs: 0, events: 3_000_000, rateLimit: 10, windowSeconds: 60 });
});
afterAll(async () => {
  await sim.close();
});

/** The shape of a page, with values that legitimately differ (ids, instants, request ids) left out. */
function shape(body: PageBody) {
  const first = body.data[0]!;
  return {
    body: Object.keys(body),
    pagination: Object.keys(body.pagination),
    meta: Object.keys(body.meta),
    event: Object.keys(first),
    session: Object.keys(first.session as object),
    cursor: body.pagination.nextCursor ? Object.keys(decodeCursor(body.pagination.nextCursor)) : null,
    limit: body.pagination.limit,
    returned: body.meta.returned,
    hasMore: body.pagination.hasMore,
    cursorVersion: body.pagination.nextCursor ? decodeCursor(body.pagination.nextCursor).v : null,
  };
}

/** Every third event (0, 3, 6, ...) carries epoch ms as a number, the rest ISO strings with ms and Z. */
function timestampMixHolds(body: PageBody): boolean {
  return body.data.every((e, i) =>
    i % 3 === 0
      ? typeof e.timestamp === 'number'
      : typeof e.timestamp === 'string' && ISO_MS_Z.test(e.timestamp),
  );
}

function headerNames(h: Record<string, string>): string[] {
  return Object.keys(h).sort();
}

function compareWithCapture(live: HttpCapture, got: SimResponse): void {
  expect(got.status).toBe(live.status);
  expect(headerNames(got.headers)).toEqual(headerNames(live.headers));
  for (const name of [
    'content-type',
    'connection',
    'x-powered-by',
    'access-control-allow-origin',
    'x-cache-ttl',
  ]) {
    expect(got.headers[name], name).toBe(live.headers[name]);
  }
  expect(got.headers['x-cache']).toMatch(/^(MISS|HIT)$/);
  expect(got.headers.etag).toMatch(/^W\/"[0-9a-f]+-[A-Za-z0-9+/]{27}"$/);
  expect(Number(got.headers['content-length'])).toBe(Buffer.byteLength(got.text));
  const liveBody = JSON.parse(live.body) as PageBody;
  const body = JSON.parse(got.text) as PageBody;
  expect(shape(body)).toEqual(shape(liveBody));
  expect(timestampMixHolds(liveBody)).toBe(true);
  expect(timestampMixHolds(body)).toBe(true);
  expect(body.meta.requestId).toBe(got.headers['x-request-id']);
  expect(body.meta.total).toBe(liveBody.meta.total);
  expect(body.pagination.cursorExpiresIn).toBe(116);
  for (const e of body.data) {
    expect(e.id).toMatch(UUID_V4);
    expect((e.session as { id: string }).id).toBe(e.sessionId);
  }
  // About 350 bytes an event, like the live service.
  expect(Math.abs(got.text.length - live.body.length) / live.body.length).toBeLessThan(0.05);
}

describe.runIf(sharedCapturesAvailable())('fidelity against the live 5000-event capture', () => {
  it('matches headers, key sets, cursor fields, timestamp mix and limit echo', async () => {
    const live = readSharedCapture('06-events-limit-5000.http');
    const got = await request(`${sim.url}/events?limit=5000`);
    compareWithCapture(live, got);
    const body = JSON.parse(got.text) as PageBody;
    // Newest first, starting where the capture starts (27 January 2026, 19:20).
    expect(new Date(body.data[0]!.timestamp as number).toISOString().slice(0, 16)).toBe('2026-01-27T19:20');
  });

  it('serves the manifest byte for byte', async () => {
    const got = await request(sim.url);
    expect(got.text).toBe(readSharedCapture('01-root.http').body);
  });
});

describe('fidelity against the in-repo captures', () => {
  it('matches the 10-event capture', async () => {
    compareWithCapture(
      readFixtureCapture('events-limit-10.http'),
      await request(`${sim.url}/events?limit=10`),
    );
  });

  it('matches the 404 event-id capture exactly (body) and by header names', async () => {
    const live = readFixtureCapture('events-export-404.http');
    const got = await request(`${sim.url}/events/export`);
    expect(got.status).toBe(404);
    expect(got.text).toBe(live.body);
    expect(headerNames(got.headers)).toEqual(headerNames(live.headers));
  });

  it('answers HEAD with the capture header names and no body', async () => {
    const live = readFixtureCapture('headers-only.http');
    const got = await request(`${sim.url}/events`, { method: 'HEAD' });
    expect(got.status).toBe(200);
    expect(got.text).toBe('');
    expect(headerNames(got.headers)).toEqual(headerNames(live.headers));
    expect(Number(got.headers['content-length'])).toBeGreaterThan(30_000);
  });

  it('serves the manifest as the in-repo fixture', async () => {
    const { readFileSync } = await import('node:fs');
    const { FIXTURES_DIR } = await import('#test/support/captures.ts');
    const got = await request(sim.url, { apiKey: null });
    expect(got.status).toBe(200);
    expect(got.text).toBe(readFileSync(`${FIXTURES_DIR}/root.json`, 'utf8').trimEnd());
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import { CHAOS_PROFILE, type SimulatorOptionsInput, startSimulator } from '#local/simulator/index.ts';
import { decodeCursor } from '#shared/cursor.ts';
import { normaliseEvent, normalisePage } from '#shared/upstream/normalise.ts';
import { eventsUrl, type PageBody, request } from './http.ts';

let sim: Awaited<ReturnType<typeof startSimulator>> | null = null;
async function start(options: SimulatorOptionsInput) {
  sim = await startSimulator({ port: 0, events: 2_000, rateLimit: 0, ...options });
  return sim;
}
afterEach(async () => {
  await sim?.close();
  sim = null;
});

async function page(url: string): Promise<PageBody> {
  const res = await request(url);
  expect(res.status).toBe(200);
  return JSON.parse(res.text) as PageBody;
}

describe('per-event data faults', () => {
  it('malformedTimestampRate makes the same events unparseable on every request, ids unchanged', async () => {
    const s = await start({ malformedTimestampRate: 0.2 });
    const a = await page(eventsUrl(s.url, { limit: 500 }));
    const b = await page(eventsUrl(s.url, { limit: 500, other: 1 }));
    expect(b.data).toEqual(a.data);
    const rejected = a.data.flatMap((e, i) => (normaliseEvent(e).ok ? [] : [i]));
    expect(rejected.length).toBeGreaterThan(50);
    expect(rejected).toEqual(a.data.flatMap((_, i) => (s.dataset.isValid(i) ? [] : [i])));
    expect(a.data.map((e) => e.id)).toEqual(a.data.map((_, i) => s.dataset.idAt(i)));
    expect(s.stats().faults.malformedTimestamp).toBe(rejected.length * 2);
  });

  it('missingFieldRate leaves out one required field', async () => {
    const s = await start({ missingFieldRate: 1 });
    const { data } = await page(eventsUrl(s.url, { limit: 200 }));
    const required = ['sessionId', 'userId', 'type', 'name', 'timestamp'];
    for (const e of data) {
      expect(required.filter((k) => !(k in e)).length).toBe(1);
      expect(normaliseEvent(e).ok).toBe(false);
    }
    expect(s.dataset.expectedValidCount()).toBe(0);
  });

  it('epochSecondsRate and controlCharRate change the form, not the instant', async () => {
    for (const knob of ['epochSecondsRate', 'controlCharRate'] as const) {
      const s = await start({ [knob]: 1 });
      const { data } = await page(eventsUrl(s.url, { limit: 100 }));
      data.forEach((e, i) => {
        if (knob === 'epochSecondsRate') expect(e.timestamp as number).toBeLessThan(1e11);
        else expect(e.timestamp as string).not.toMatch(/^\d{4}-\d{2}-\d{2}T[\d:.]+Z$/);
        const r = normaliseEvent(e);
        expect(r.ok && r.event.occurredAtMs).toBe(s.dataset.timestampAt(i));
      });
      expect(s.dataset.expectedValidCount()).toBe(2_000);
      await s.close();
      sim = null;
    }
  });
});

describe('per-request faults', () => {
  it('duplicateRowRate repeats rows from just before the cursor', async () => {
    const s = await start({ duplicateRowRate: 1 });
    const first = await page(eventsUrl(s.url, { limit: 100 }));
    const second = await page(eventsUrl(s.url, { limit: 100, cursor: first.pagination.nextCursor! }));
    const seen = new Set(first.data.map((e) => e.id));
    const repeated = second.data.filter((e) => seen.has(e.id as string)).length;
    expect(repeated).toBeGreaterThanOrEqual(1);
    expect(repeated).toBeLessThanOrEqual(25);
    // The repeats lead the page and are the rows right before the cursor, in order.
    expect(second.data.slice(0, repeated)).toEqual(first.data.slice(100 - repeated));
    expect(second.data.length).toBe(100);
    expect(s.stats().faults.duplicateRows).toBe(repeated);
    // The cursor still points at the last row served, so nothing is skipped.
    expect(decodeCursor(second.pagination.nextCursor!).id).toBe(second.data.at(-1)!.id);
  });

  it('transientErrorRate answers load-balancer 5xx errors', async () => {
    const s = await start({ transientErrorRate: 1 });
    const statuses = new Set<number>();
    for (let i = 0; i < 12; i++) {
      const res = await request(eventsUrl(s.url));
      statuses.add(res.status);
      expect(res.headers.server).toBe('awselb/2.0');
      expect(res.headers['content-type']).toBe('text/html');
      expect(res.text).toContain(`<h1>${res.status} `);
    }
    expect([...statuses].every((x) => [500, 502, 503, 504].includes(x))).toBe(true);
    expect(statuses.size).toBeGreaterThan(1);
    expect(s.stats().faults.transientError).toBe(12);
  });

  it('truncatedBodyRate cuts the JSON short with a consistent Content-Length', async () => {
    const s = await start({ truncatedBodyRate: 1 });
    const res = await request(eventsUrl(s.url, { limit: 50 }));
    expect(res.status).toBe(200);
    expect(Number(res.headers['content-length'])).toBe(Buffer.byteLength(res.text));
    expect(() => JSON.parse(res.text)).toThrow();
    expect(s.stats().faults.truncatedBody).toBe(1);
  });

  it('latencyMs and latencyJitterMs delay pages, scaled by timeScale', async () => {
    const s = await start({ latencyMs: 1000, latencyJitterMs: 1000, timeScale: 50 });
    await request(eventsUrl(s.url));
    await request(eventsUrl(s.url, { limit: 2 }));
    const total = s.stats().faults.latencyMsTotal;
    expect(total).toBeGreaterThanOrEqual(40);
    expect(total).toBeLessThanOrEqual(80);
  });

  it('is reproducible: the same request sequence meets the same faults', async () => {
    const run = async () => {
      const s = await start({ transientErrorRate: 0.5, seed: 9 });
      const out: number[] = [];
      for (let i = 0; i < 20; i++) out.push((await request(eventsUrl(s.url, { limit: 1 }))).status);
      await s.close();
      sim = null;
      return out;
    };
    const first = await run();
    expect(new Set(first)).not.toEqual(new Set([200]));
    expect(await run()).toEqual(first);
  });
});

describe('chaos profile and cache', () => {
  it('chaos switches the documented rates on; an explicit rate still wins', async () => {
    const s = await start({ chaos: true, transientErrorRate: 0 });
    expect(s.options).toMatchObject({ ...CHAOS_PROFILE, transientErrorRate: 0 });
    expect(s.dataset.expectedValidCount()).toBeLessThan(2_000);
    // Over a full walk the rejects are exactly the data set's prediction.
    const rejectedIds = new Set<string>();
    let cursor: string | null = null;
    do {
      const res = await request(eventsUrl(s.url, cursor ? { limit: 5000, cursor } : { limit: 5000 }));
      if (res.status !== 200) continue;
      let body: PageBody;
      try {
        body = JSON.parse(res.text) as PageBody;
      } catch {
        continue; // a truncated body: ask again
      }
      for (const r of normalisePage(body.data).rejects) rejectedIds.add((r.raw as { id: string }).id);
      cursor = body.pagination.nextCursor;
    } while (cursor);
    expect(rejectedIds).toEqual(new Set(s.dataset.rejectedIndices().map((i) => s.dataset.idAt(i))));
  });

  it('serves an identical request within the cache TTL as a HIT with the same body', async () => {
    const s = await start({});
    const url = eventsUrl(s.url, { limit: 20 });
    const a = await request(url);
    const b = await request(url);
    expect(a.headers['x-cache']).toBe('MISS');
    expect(b.headers['x-cache']).toBe('HIT');
    expect(b.text).toBe(a.text);
    expect(b.headers.etag).toBe(a.headers.etag);
    expect(b.headers['x-request-id']).toBe(JSON.parse(b.text).meta.requestId);
    expect((await request(url, { apiKey: 'local-dev-key' })).headers['x-cache']).toBe('HIT');
    expect((await request(eventsUrl(s.url, { limit: 21 }))).headers['x-cache']).toBe('MISS');
    expect(s.stats().cacheHits).toBe(2);
  });
});

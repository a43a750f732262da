import { describe, expect, it } from 'vitest';
import { decodeCursor } from '#shared/cursor.ts';
import { normalisePage } from '#shared/upstream/normalise.ts';
import { parseEventsBody } from '#shared/upstream/schemas.ts';
import {
  type HttpCapture,
  readFixtureCapture,
  readSharedCapture,
  sharedCapturesAvailable,
} from '#test/support/captures.ts';

/**
 * The real responses of the live service, end to end through the body parser and the
 * normaliser: every event is accepted and lands on exactly the instant the source wrote.
 */
function checkCapture(capture: HttpCapture, expected: { events: number; numeric: number; iso: number }) {
  const page = parseEventsBody(JSON.parse(capture.body));
  const raw = page.data as Array<{ id: string; timestamp: unknown }>;
  expect(raw).toHaveLength(expected.events);

  const { events, rejects } = normalisePage(page.data);
  expect(rejects).toEqual([]);
  expect(events).toHaveLength(expected.events);

  let numeric = 0;
  let iso = 0;
  raw.forEach((source, i) => {
    const event = events[i];
    expect(event?.id).toBe(source.id.toLowerCase());
    if (typeof source.timestamp === 'number') {
      numeric++;
      // The live service sends every third event's timestamp as a number.
      expect(i % 3).toBe(0);
      expect(event?.occurredAtMs).toBe(source.timestamp);
    } else {
      iso++;
      expect(i % 3).not.toBe(0);
      expect(source.timestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      expect(event?.occurredAtMs).toBe(new Date(source.timestamp as string).getTime());
    }
  });
  expect({ numeric, iso }).toEqual({ numeric: expected.numeric, iso: expected.iso });

  // Newest first, never ascending (ties are allowed).
  for (let i = 1; i < events.length; i++) {
    expect(events[i]!.occurredAtMs).toBeLessThanOrEqual(events[i - 1]!.occurredAtMs);
  }

  expect(page.hasMore).toBe(true);
  expect(page.nextCursor).not.toBeNull();
  const cursor = decodeCursor(page.nextCursor as string);
  const last = events.at(-1)!;
  expect({ id: cursor.id, ts: cursor.ts, v: cursor.v }).toEqual({ id: last.id, ts: last.occurredAtMs, v: 2 });
  expect(page.limit).toBe(expected.events);
  expect(page.total).toBe(3_000_000);
  expect(page.requestId).toBe(capture.headers['x-request-id']);
  return { page, events };
}

describe('in-repo capture excerpt (events-limit-10.http)', () => {
  it('accepts all 10 events with their exact instants and a cursor at the last one', () => {
    const capture = readFixtureCapture('events-limit-10.http');
    // Indices 0, 3, 6, 9 carry numbers.
    const { page } = checkCapture(capture, { events: 10, numeric: 4, iso: 6 });
    expect(page.cursorExpiresIn).toBe(117);
  });
});

describe.runIf(sharedCapturesAvailable())('shared captures', () => {
  it('accepts all 5000 events of 06-events-limit-5000.http with their exact instants', () => {
    const capture = readSharedCapture('06-events-limit-5000.http');
    // Every third event (index 0, 3, ..., 4998) is numeric: ceil(5000 / 3) = 1667.
    const { page, events } = checkCapture(capture, { events: 5000, numeric: 1667, iso: 3333 });
    expect(page.cursorExpiresIn).toBe(116);
    expect(new Set(events.map((e) => e.id)).size).toBe(5000);
    // The five equal adjacent pairs the handbook reports: why the position must be (ts, id).
    let ties = 0;
    for (let i = 1; i < events.length; i++)
      if (events[i]!.occurredAtMs === events[i - 1]!.occurredAtMs) ties++;
    expect(ties).toBe(5);
  });

  it('accepts the default page (02-events-default.http) of 100 events', () => {
    checkCapture(readSharedCapture('02-events-default.http'), { events: 100, numeric: 34, iso: 66 });
  });
});

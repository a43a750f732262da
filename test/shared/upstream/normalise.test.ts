import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  INVALID_UTF8_REASON,
  MAX_TIMESTAMP_MS,
  MIN_TIMESTAMP_MS,
  normaliseEvent,
  normalisePage,
  parseTimestamp,
  stripAround,
} from '#shared/upstream/normalise.ts';

const ID = '56a349b5-7243-4e0c-9fd8-f2c1eb2a5d35';
const SESSION = '0ae5e27f-bcc5-4d99-b744-3ce64d3623a9';
const USER = '1f2a12b4-1bdc-463d-ba74-f6d849f5b76f';
const INSTANT = Date.UTC(2026, 0, 27, 19, 19, 13, 629); // 2026-01-27T19:19:13.629Z

function rawEvent(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: ID,
    sessionId: SESSION,
    userId: USER,
    type: 'click',
    name: 'event_e8o287',
    properties: { page: '/home' },
    timestamp: INSTANT,
    session: { id: SESSION, deviceType: 'tablet', browser: 'Edge' },
    ...overrides,
  };
}

function without(key: string): Record<string, unknown> {
  const e = rawEvent();
  delete e[key];
  return e;
}

function rejectReason(raw: unknown): string {
  const r = normaliseEvent(raw);
  if (r.ok) throw new Error(`expected a reject, got ${JSON.stringify(r.event)}`);
  expect(r.reject.raw).toBe(raw);
  return r.reject.reason;
}

describe('parseTimestamp', () => {
  it.each([
    ['epoch ms number', INSTANT],
    ['epoch seconds number with millis fraction', INSTANT / 1000],
    ['epoch ms numeric string', String(INSTANT)],
    ['epoch seconds numeric string', (INSTANT / 1000).toFixed(3)],
    ['ISO with millis and Z', '2026-01-27T19:19:13.629Z'],
    ['ISO with lower-case z and t', '2026-01-27t19:19:13.629z'],
    ['ISO with a space separator', '2026-01-27 19:19:13.629Z'],
    ['ISO with a positive offset', '2026-01-27T20:19:13.629+01:00'],
    ['ISO with a negative offset', '2026-01-27T14:19:13.629-05:00'],
    ['ISO with a compact offset', '2026-01-27T21:19:13.629+0200'],
    ['ISO with an hours-only offset', '2026-01-28T04:19:13.629+09'],
    ['ISO with microseconds (truncated)', '2026-01-27T19:19:13.629999Z'],
    ['ISO with a comma fraction', '2026-01-27T19:19:13,629Z'],
    ['surrounded by whitespace', '  2026-01-27T19:19:13.629Z\n'],
    ['surrounded by zero-width characters', '\u200b\ufeff2026-01-27T19:19:13.629Z\u2060\u200d'],
    ['surrounded by C0/C1 controls', '\u0000\u0007\u00852026-01-27T19:19:13.629Z\u001f\u009f'],
    ['numeric string with zero-width space', `\u200c${INSTANT}\u200b`],
  ])('reads %s as the same instant', (_label, value) => {
    expect(parseTimestamp(value)).toBe(INSTANT);
  });

  it('reads ISO without milliseconds or without seconds', () => {
    expect(parseTimestamp('2026-01-27T19:19:13Z')).toBe(Date.UTC(2026, 0, 27, 19, 19, 13));
    expect(parseTimestamp('2026-01-27T19:19Z')).toBe(Date.UTC(2026, 0, 27, 19, 19));
    expect(parseTimestamp('2026-01-27T19:19:13.6Z')).toBe(Date.UTC(2026, 0, 27, 19, 19, 13, 600));
  });

  it('reads whole epoch seconds and tells them from milliseconds at 1e11', () => {
    expect(parseTimestamp(1769541612)).toBe(1769541612000);
    expect(parseTimestamp('1769541612')).toBe(1769541612000);
    // 99_999_999_999 s would be the year 5138: outside the range, so rejected rather than read as ms.
    expect(parseTimestamp(99_999_999_999)).toBeNull();
    // 1e11 ms is 1973: read as ms, and rejected as before 2000.
    expect(parseTimestamp(1e11)).toBeNull();
  });

  it('accepts a leap day and the range bounds', () => {
    expect(parseTimestamp('2024-02-29T00:00:00Z')).toBe(Date.UTC(2024, 1, 29));
    expect(parseTimestamp(MIN_TIMESTAMP_MS)).toBe(MIN_TIMESTAMP_MS);
    expect(parseTimestamp(MAX_TIMESTAMP_MS - 1)).toBe(MAX_TIMESTAMP_MS - 1);
  });

  it.each([
    ['impossible month and day', '2026-13-45'],
    ['impossible month with time', '2026-13-01T00:00:00Z'],
    ['February 30th', '2026-02-30T00:00:00Z'],
    ['February 29th of a common year', '2026-02-29T00:00:00Z'],
    ['hour 24', '2026-01-27T24:00:00Z'],
    ['leap second', '2026-01-27T23:59:60Z'],
    ['date only', '2026-01-27'],
    ['no time zone', '2026-01-27T19:19:13.629'],
    ['offset out of range', '2026-01-27T19:19:13+25:00'],
    ['junk that Date.parse accepts', 'Tue Jan 27 2026'],
    ['a bare small number string Date.parse reads as a year', '1'],
    ['text', 'yesterday'],
    ['empty string', ''],
    ['only invisible characters', '\u200b\u0000 '],
    ['zero-width space inside', '2026-01-27T19:\u200b19:13.629Z'],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['before 2000', '1999-12-31T23:59:59.999Z'],
    ['2100 or later', '2100-01-01T00:00:00Z'],
    ['epoch zero', 0],
    ['negative epoch', -INSTANT],
    ['boolean', true],
    ['object', { ts: INSTANT }],
    ['null', null],
  ])('rejects %s', (_label, value) => {
    expect(parseTimestamp(value)).toBeNull();
  });

  it('agrees with Date for every canonical ISO string in range (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: MIN_TIMESTAMP_MS, max: MAX_TIMESTAMP_MS - 1 }), (ms) => {
        const iso = new Date(ms).toISOString();
        expect(parseTimestamp(iso)).toBe(ms);
        expect(parseTimestamp(ms)).toBe(ms);
        expect(parseTimestamp(String(ms))).toBe(ms);
        expect(parseTimestamp(Math.floor(ms / 1000))).toBe(Math.floor(ms / 1000) * 1000);
      }),
    );
  });

  it('agrees with Date for any offset (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: Date.UTC(2001, 0, 1), max: Date.UTC(2099, 0, 1) }),
        fc.integer({ min: -14 * 60, max: 14 * 60 }),
        (ms, offsetMin) => {
          const local = new Date(ms + offsetMin * 60_000).toISOString().slice(0, 23);
          const sign = offsetMin < 0 ? '-' : '+';
          const abs = Math.abs(offsetMin);
          const offset = `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
          expect(parseTimestamp(`${local}${offset}`)).toBe(ms);
        },
      ),
    );
  });
});

describe('normaliseEvent', () => {
  it('maps a live-service event', () => {
    const r = normaliseEvent(rawEvent());
    expect(r).toEqual({
      ok: true,
      event: {
        id: ID,
        sessionId: SESSION,
        userId: USER,
        type: 'click',
        name: 'event_e8o287',
        properties: { page: '/home' },
        occurredAtMs: INSTANT,
        deviceType: 'tablet',
        browser: 'Edge',
      },
    });
  });

  it('lower-cases UUIDs of any version and strips invisible characters around strings', () => {
    const r = normaliseEvent(
      rawEvent({
        id: ` \u200b${ID.toUpperCase()}\u0000`,
        sessionId: `${SESSION.toUpperCase()}\t`,
        userId: '\ufeff00000000-0000-0000-0000-000000000000',
        type: '\u200bpage_view\u2060',
        name: ' event_abc123 \r\n',
        session: { id: SESSION, deviceType: '\u200bmobile', browser: 'Chrome\u0085' },
      }),
    );
    expect(r.ok && r.event).toMatchObject({
      id: ID,
      sessionId: SESSION,
      userId: '00000000-0000-0000-0000-000000000000',
      type: 'page_view',
      name: 'event_abc123',
      deviceType: 'mobile',
      browser: 'Chrome',
    });
  });

  it('rejects an unknown event type (kept in rejected_events, where a type the upstream adds shows up)', () => {
    expect(rejectReason(rawEvent({ type: 'checkout_started' }))).toMatch(
      /^type: "checkout_started" is not one of the documented types \(page_view, click,/,
    );
  });

  it('defaults properties to {} and keeps any JSON otherwise', () => {
    expect(normaliseEvent(without('properties'))).toMatchObject({ ok: true, event: { properties: {} } });
    expect(normaliseEvent(rawEvent({ properties: null }))).toMatchObject({
      ok: true,
      event: { properties: {} },
    });
    const nested = { a: [1, 'two', { b: null }], c: true };
    expect(normaliseEvent(rawEvent({ properties: nested }))).toMatchObject({
      ok: true,
      event: { properties: nested },
    });
    expect(normaliseEvent(rawEvent({ properties: 'text' }))).toMatchObject({
      ok: true,
      event: { properties: 'text' },
    });
  });

  it('gives null device and browser when the session or its fields are absent or blank', () => {
    expect(normaliseEvent(without('session'))).toMatchObject({
      ok: true,
      event: { deviceType: null, browser: null },
    });
    expect(normaliseEvent(rawEvent({ session: { id: SESSION } }))).toMatchObject({
      ok: true,
      event: { deviceType: null, browser: null },
    });
    expect(
      normaliseEvent(rawEvent({ session: { id: SESSION, deviceType: ' ', browser: null } })),
    ).toMatchObject({
      ok: true,
      event: { deviceType: null, browser: null },
    });
  });

  it.each([
    ['id: missing', without('id')],
    ['id: missing', rawEvent({ id: null })],
    ['sessionId: missing', without('sessionId')],
    ['userId: missing', without('userId')],
    ['type: missing', without('type')],
    ['name: missing', without('name')],
    ['timestamp: missing', without('timestamp')],
    ['timestamp: missing', rawEvent({ timestamp: null })],
    ['id: not a UUID "not-a-uuid"', rawEvent({ id: 'not-a-uuid' })],
    ['id: not a UUID "56a349b5-7243-4e0c-9fd8-f2c1eb2a5d3"', rawEvent({ id: ID.slice(0, -1) })],
    ['id: not a UUID "56a349b5x7243-4e0c-9fd8-f2c1eb2a5d35"', rawEvent({ id: ID.replace('-', 'x') })],
    ['id: not a UUID "g6a349b5-7243-4e0c-9fd8-f2c1eb2a5d35"', rawEvent({ id: `g${ID.slice(1)}` })],
    ['id: not a string (number 42)', rawEvent({ id: 42 })],
    ['sessionId: not a UUID ""', rawEvent({ sessionId: '' })],
    ['userId: not a string (object)', rawEvent({ userId: { id: USER } })],
    ['type: empty', rawEvent({ type: '\u200b' })],
    ['type: not a string (number 1)', rawEvent({ type: 1 })],
    ['name: not a string (boolean true)', rawEvent({ name: true })],
    ['timestamp: unparseable value "2026-13-45"', rawEvent({ timestamp: '2026-13-45' })],
    ['timestamp: unparseable value "soon"', rawEvent({ timestamp: 'soon' })],
    ['timestamp: not a number or string (boolean true)', rawEvent({ timestamp: true })],
    ['timestamp: empty string ""', rawEvent({ timestamp: '' })],
    ['timestamp: 5 read as epoch seconds is outside 2000-01-01..2100-01-01', rawEvent({ timestamp: 5 })],
    [
      'timestamp: ISO date-time without a time zone "2026-01-27T19:19:13" (no Z or ±hh:mm offset): refusing to guess one',
      rawEvent({ timestamp: '2026-01-27T19:19:13' }),
    ],
    [
      'timestamp: "1999-12-31T23:59:59Z" is outside 2000-01-01..2100-01-01',
      rawEvent({ timestamp: '1999-12-31T23:59:59Z' }),
    ],
    ['session: not an object (string "x")', rawEvent({ session: 'x' })],
    [
      'session.browser: not a string (number 3)',
      rawEvent({ session: { id: SESSION, deviceType: 'mobile', browser: 3 } }),
    ],
    [
      'properties: contains U+0000 or an unpaired surrogate, which PostgreSQL jsonb cannot store',
      rawEvent({ properties: { page: 'a\u0000b' } }),
    ],
    [
      'properties: contains U+0000 or an unpaired surrogate, which PostgreSQL jsonb cannot store',
      rawEvent({ properties: { list: [{ deep: '\ud800' }] } }),
    ],
    [
      'name: contains U+0000 or an unpaired surrogate, which PostgreSQL cannot store "event_\\u0000x"',
      rawEvent({ name: 'event_\u0000x' }),
    ],
  ])('rejects with reason %j', (reason, raw) => {
    expect(rejectReason(raw)).toBe(reason);
  });

  it('names every problem of an event, not just the first', () => {
    expect(rejectReason({ id: 'x', type: 'click', name: 'n' })).toBe(
      'id: not a UUID "x"; sessionId: missing; userId: missing; timestamp: missing',
    );
  });

  it('makes invisible characters visible in a reason', () => {
    expect(rejectReason(rawEvent({ id: 'abc\u200bdef' }))).toBe('id: not a UUID "abc\\u200bdef"');
  });

  it.each([
    ['null', null, 'event: not an object (null)'],
    ['an array', [ID], 'event: not an object (array)'],
    ['a string', 'event', 'event: not an object (string "event")'],
    ['a number', 7, 'event: not an object (number 7)'],
  ])('rejects an event that is %s', (_label, raw, reason) => {
    expect(rejectReason(raw)).toBe(reason);
  });

  it('keeps properties with surrogate pairs (emoji)', () => {
    expect(normaliseEvent(rawEvent({ properties: { mood: '😀' }, name: 'event_😀' })).ok).toBe(true);
  });
});

describe('normalisePage', () => {
  it('splits a page into events and rejects, per event and in order', () => {
    const bad1 = rawEvent({ timestamp: 'garbage' });
    const bad2 = null;
    const page = [
      rawEvent(),
      bad1,
      rawEvent({ id: '065a1ce4-7f87-4dc0-a18a-6ee5cdbaf027' }),
      bad2,
      rawEvent({ id: 'a90549db-0eb5-4d60-856f-65e44421e97e' }),
    ];
    const { events, rejects } = normalisePage(page);
    expect(events.map((e) => e.id)).toEqual([
      ID,
      '065a1ce4-7f87-4dc0-a18a-6ee5cdbaf027',
      'a90549db-0eb5-4d60-856f-65e44421e97e',
    ]);
    expect(rejects.map((r) => r.raw)).toEqual([bad1, bad2]);
    expect(rejects[0]?.reason).toBe('timestamp: unparseable value "garbage"');
  });

  it('in a page that was not valid UTF-8, rejects the events showing U+FFFD and keeps the others', () => {
    const replaced = rawEvent({ id: '065a1ce4-7f87-4dc0-a18a-6ee5cdbaf027', name: 'bin\ufffdend' });
    const inProps = rawEvent({ id: 'a90549db-0eb5-4d60-856f-65e44421e97e', properties: { q: '\ufffd' } });
    const clean = rawEvent();
    const flagged = normalisePage([replaced, clean, inProps], { invalidUtf8: true });
    expect(flagged.events.map((e) => e.id)).toEqual([ID]);
    expect(flagged.rejects).toEqual([
      { raw: replaced, reason: INVALID_UTF8_REASON },
      { raw: inProps, reason: INVALID_UTF8_REASON },
    ]);
    // The same events in a page that decoded cleanly: U+FFFD is a character like any other.
    expect(normalisePage([replaced, clean, inProps]).events).toHaveLength(3);
  });

  it('handles an empty page', () => {
    expect(normalisePage([])).toEqual({ events: [], rejects: [] });
  });

  it('never throws and accounts for every input (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.jsonValue(), fc.constant(rawEvent()))), (data) => {
        const { events, rejects } = normalisePage(data);
        expect(events.length + rejects.length).toBe(data.length);
        for (const e of events) {
          expect(e.occurredAtMs).toBeGreaterThanOrEqual(MIN_TIMESTAMP_MS);
          expect(e.occurredAtMs).toBeLessThan(MAX_TIMESTAMP_MS);
        }
        for (const r of rejects) expect(r.reason).not.toBe('');
      }),
    );
  });
});

describe('stripAround', () => {
  it('returns a clean string unchanged and strips only the ends', () => {
    const clean = 'event_abc';
    expect(stripAround(clean)).toBe(clean);
    expect(stripAround('\u200b a\u200bb \u0001')).toBe('a\u200bb');
    expect(stripAround('\u200b\u0000\u00a0')).toBe('');
  });
});

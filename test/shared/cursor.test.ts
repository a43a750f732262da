import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CURSOR_VERSION,
  cursorExpiresWithin,
  cursorFromPosition,
  decodeCursor,
  encodeCursor,
  refreshCursor,
} from '#shared/cursor.ts';
import { CursorInvalidError } from '#shared/errors.ts';

/** The nextCursor of `03-events-limit-10.http` (the in-repo fixture), as the live service sent it. */
const LIVE =
  'eyJpZCI6ImVkYTYyOGYzLWMxMjItNDEzZS05NGMwLTAyYTA5MjI3M2Y3NSIsInRzIjoxNzY5NTQxNDM2NzYxLCJ2IjoyLCJleHAiOjE3NzE1NTk3NzcwNjJ9';
const LIVE_PAYLOAD = {
  id: 'eda628f3-c122-413e-94c0-02a092273f75',
  ts: 1769541436761,
  v: 2,
  exp: 1771559777062,
};

const toUrlAlphabet = (b64: string) => b64.replace(/\+/g, '-').replace(/\//g, '_');
const unpad = (b64: string) => b64.replace(/=+$/, '');

const payloadArb = fc.record({
  id: fc.string({ minLength: 1, maxLength: 40 }),
  ts: fc.integer({ min: 0, max: 4_102_444_800_000 }),
  v: fc.integer({ min: 0, max: 9 }),
  exp: fc.integer({ min: 0, max: 4_102_444_800_000 }),
});

describe('decodeCursor / encodeCursor', () => {
  it('decodes the live cursor', () => {
    expect(decodeCursor(LIVE)).toEqual(LIVE_PAYLOAD);
  });

  it('encodes in the live key order, byte-identical to the live cursor', () => {
    expect(encodeCursor({ exp: LIVE_PAYLOAD.exp, v: 2, ts: LIVE_PAYLOAD.ts, id: LIVE_PAYLOAD.id })).toBe(
      LIVE,
    );
  });

  it('round-trips any payload through padded, unpadded, base64url and whitespace-wrapped forms (property)', () => {
    fc.assert(
      fc.property(payloadArb, (payload) => {
        const padded = encodeCursor(payload);
        expect(padded.length % 4).toBe(0);
        expect(decodeCursor(padded)).toEqual(payload);
        expect(decodeCursor(unpad(padded))).toEqual(payload);
        expect(decodeCursor(toUrlAlphabet(padded))).toEqual(payload);
        expect(decodeCursor(unpad(toUrlAlphabet(padded)))).toEqual(payload);
        expect(decodeCursor(` ${padded}\n`)).toEqual(payload);
      }),
    );
  });

  it('decodes a cursor whose base64 uses + and / (and their url-safe forms)', () => {
    const payload = { id: '???>>>~~~', ts: 1, v: 2, exp: 3 };
    const standard = encodeCursor(payload);
    expect(standard).toMatch(/[+/]/);
    expect(decodeCursor(standard)).toEqual(payload);
    expect(decodeCursor(toUrlAlphabet(standard))).toEqual(payload);
  });

  it.each([
    ['an empty string', ''],
    ['only whitespace', '   '],
    ['characters outside base64', 'abc!def'],
    ['padding in the middle', 'ab=cd'],
    ['too much padding', 'abcd==='],
    ['base64 of text that is not JSON', Buffer.from('not json').toString('base64')],
    ['a truncated live cursor', LIVE.slice(0, 60)],
    ['JSON that is not an object', Buffer.from('[1,2]').toString('base64')],
    ['JSON without ts', Buffer.from(JSON.stringify({ id: 'x', v: 2, exp: 1 })).toString('base64')],
    [
      'JSON with a string ts',
      Buffer.from(JSON.stringify({ id: 'x', ts: '1', v: 2, exp: 1 })).toString('base64'),
    ],
    [
      'JSON with an empty id',
      Buffer.from(JSON.stringify({ id: '', ts: 1, v: 2, exp: 1 })).toString('base64'),
    ],
    [
      'JSON with a fractional ts',
      Buffer.from(JSON.stringify({ id: 'x', ts: 1.5, v: 2, exp: 1 })).toString('base64'),
    ],
  ])('refuses %s with CursorInvalidError telling to pass the exact nextCursor', (_label, cursor) => {
    expect(() => decodeCursor(cursor)).toThrow(CursorInvalidError);
    expect(() => decodeCursor(cursor)).toThrow(/pass the exact pagination\.nextCursor/);
  });

  it('names the missing fields', () => {
    const cursor = Buffer.from(JSON.stringify({ id: 'x', v: 2 })).toString('base64');
    expect(() => decodeCursor(cursor)).toThrow(/ts, exp/);
  });

  it('never throws anything but CursorInvalidError on arbitrary input (property)', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        try {
          decodeCursor(s);
        } catch (error) {
          expect(error).toBeInstanceOf(CursorInvalidError);
        }
      }),
    );
  });
});

describe('refreshCursor', () => {
  it('rewrites exp only, keeping the position and version', () => {
    const now = 1_800_000_000_000;
    const refreshed = refreshCursor(LIVE, now, 116_000);
    expect(decodeCursor(refreshed)).toEqual({ ...LIVE_PAYLOAD, exp: now + 116_000 });
  });

  it('defaults to the observed 116 s lifetime and accepts the url-safe unpadded form', () => {
    const cursor = unpad(toUrlAlphabet(encodeCursor({ id: '???>>>', ts: 5, v: 2, exp: 0 })));
    expect(decodeCursor(refreshCursor(cursor, 1000))).toEqual({ id: '???>>>', ts: 5, v: 2, exp: 117_000 });
  });

  it('refuses a cursor that does not decode', () => {
    expect(() => refreshCursor('%%%', 0)).toThrow(CursorInvalidError);
  });
});

describe('cursorFromPosition', () => {
  it('builds a current-version cursor at the stored position', () => {
    const cursor = cursorFromPosition(
      { ts: LIVE_PAYLOAD.ts, id: LIVE_PAYLOAD.id },
      LIVE_PAYLOAD.exp - 116_000,
    );
    expect(decodeCursor(cursor)).toEqual({ ...LIVE_PAYLOAD, v: CURSOR_VERSION });
    // The live cursor has the same shape, so the rebuilt one is byte-identical to it.
    expect(cursor).toBe(LIVE);
  });

  it('honours a custom lifetime', () => {
    expect(decodeCursor(cursorFromPosition({ ts: 1, id: 'a' }, 10, 5)).exp).toBe(15);
  });
});

describe('cursorExpiresWithin', () => {
  it('compares exp against now plus the margin', () => {
    const now = LIVE_PAYLOAD.exp - 10_000;
    expect(cursorExpiresWithin(LIVE, now, 9_999)).toBe(false);
    expect(cursorExpiresWithin(LIVE, now, 10_000)).toBe(true);
    expect(cursorExpiresWithin(LIVE, LIVE_PAYLOAD.exp + 1, 0)).toBe(true);
  });

  it('treats a cursor that does not decode as expiring', () => {
    expect(cursorExpiresWithin('garbage!', 0, 0)).toBe(true);
  });
});

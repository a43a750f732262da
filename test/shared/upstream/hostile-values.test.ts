import { describe, expect, it } from 'vitest';
import { escapeText, maskSecrets, maskUrl } from '#shared/upstream/escape.ts';
import {
  boundedJson,
  MAX_PROPERTIES_BYTES,
  MAX_PROPERTIES_DEPTH,
  normaliseEvent,
  normalisePage,
} from '#shared/upstream/normalise.ts';
import { findUnexactNumbers, isExactNumber } from '#shared/upstream/numbers.ts';
import { EVENT_TYPES } from '#shared/upstream/types.ts';

/*
 * What a hostile upstream sends that a correct one never does: values too deep or too big to
 * store, numbers JavaScript cannot read exactly, types outside the enum, text meant for a terminal.
 */

const SESSION = '0ae5e27f-bcc5-4d99-b744-3ce64d3623a9';

function rawEvent(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: '56a349b5-7243-4e0c-9fd8-f2c1eb2a5d35',
    sessionId: SESSION,
    userId: '1f2a12b4-1bdc-463d-ba74-f6d849f5b76f',
    type: 'click',
    name: 'event_e8o287',
    properties: { page: '/home' },
    timestamp: Date.UTC(2026, 0, 27, 19, 19, 13, 629),
    session: { id: SESSION, deviceType: 'tablet', browser: 'Edge' },
    ...overrides,
  };
}

function nested(depth: number): Record<string, unknown> {
  let v: Record<string, unknown> = { leaf: true };
  for (let i = 1; i < depth; i++) v = { next: v };
  return v;
}

function reason(raw: unknown): string {
  const r = normaliseEvent(raw);
  if (r.ok) throw new Error('expected a reject');
  return r.reject.reason;
}

describe('normaliseEvent: what cannot be stored is a reject with its reason', () => {
  it('rejects a type outside the documented enum, naming the eight types, and keeps each of them', () => {
    expect(reason(rawEvent({ type: 'hacked_type' }))).toBe(
      `type: "hacked_type" is not one of the documented types (${EVENT_TYPES.join(', ')})`,
    );
    expect(reason(rawEvent({ type: 'Click' }))).toMatch(/^type: "Click" is not one of/);
    for (const type of EVENT_TYPES) expect(normaliseEvent(rawEvent({ type })).ok).toBe(true);
  });

  it(`accepts properties ${MAX_PROPERTIES_DEPTH} levels deep and rejects one level more`, () => {
    expect(normaliseEvent(rawEvent({ properties: nested(MAX_PROPERTIES_DEPTH) })).ok).toBe(true);
    expect(reason(rawEvent({ properties: nested(MAX_PROPERTIES_DEPTH + 1) }))).toBe(
      `properties: nested deeper than ${MAX_PROPERTIES_DEPTH} levels (MAX_PROPERTIES_DEPTH), which this pipeline does not store`,
    );
  });

  it('rejects a 10,000-deep object (JSON.stringify would overflow the stack) and keeps its raw text cut at the limit', () => {
    const raw = rawEvent({ properties: nested(10_000) });
    expect(() => JSON.stringify(raw)).toThrow(RangeError);
    const r = normaliseEvent(raw);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.reject.reason).toMatch(/^properties: nested deeper than 1000 levels/);
    const text = r.reject.rawText as string;
    expect(text).toContain('"id":"56a349b5-7243-4e0c-9fd8-f2c1eb2a5d35"');
    expect(text).toContain('<cut: nested deeper than 1000 levels>');
    expect(() => JSON.parse(text)).not.toThrow();
  });

  it('rejects properties over MAX_PROPERTIES_BYTES and keeps a 5 MB value', () => {
    expect(normaliseEvent(rawEvent({ properties: { blob: 'p'.repeat(5 * 1024 * 1024) } })).ok).toBe(true);
    const big = { a: 'x'.repeat(MAX_PROPERTIES_BYTES / 2), b: 'y'.repeat(MAX_PROPERTIES_BYTES / 2) };
    expect(reason(rawEvent({ properties: big }))).toMatch(
      new RegExp(`^properties: more than ${MAX_PROPERTIES_BYTES} bytes`),
    );
  });

  it('a page keeps going past an event that cannot be serialised, also in a body that was not UTF-8', () => {
    const deep = rawEvent({ id: 'a0000000-0000-4000-8000-000000000001', properties: nested(10_000) });
    const fine = rawEvent({ id: 'a0000000-0000-4000-8000-000000000002' });
    const { events, rejects } = normalisePage([deep, fine], { invalidUtf8: true });
    expect(events.map((e) => e.id)).toEqual(['a0000000-0000-4000-8000-000000000002']);
    expect(rejects).toHaveLength(1);
  });

  it('boundedJson writes what JSON.stringify writes for a value within the limit', () => {
    const v = { a: [1, 'two', { b: null }], c: true };
    expect(boundedJson(v)).toBe(JSON.stringify(v));
  });
});

describe('numbers JavaScript cannot read exactly', () => {
  it.each([
    ['12345678901234567890', false],
    ['1e400', false],
    ['-1e400', false],
    ['1e-400', false],
    ['0.1', true],
    ['1.0', true],
    ['-0', true],
    ['1769541630123', true],
    ['9007199254740993', false],
    ['9007199254740992', true],
    ['1e308', true],
    ['5e-324', true],
    ['0.30000000000000004', true],
    ['123456789.123456789', false],
  ])('%s exact: %s', (tok, exact) => {
    expect(isExactNumber(tok)).toBe(exact);
  });

  it('finds the events that carry one, with the exact text of each, and nothing on a page of the live shape', () => {
    const good = JSON.stringify(rawEvent());
    const big = good.replace('"page":"/home"', '"page":"/home","n":12345678901234567890');
    const huge = good.replace('"page":"/home"', '"deep":{"x":[1,1e400]}');
    const tiny = good.replace('"page":"/home"', '"t":1e-400');
    const body = `{"data":[${good},${big},${good},${huge},${tiny}],"pagination":{"limit":5000,"hasMore":false,"nextCursor":null},"meta":{"total":12345678901234567890}}`;
    const found = findUnexactNumbers(body);
    expect(found.map((f) => f.index)).toEqual([1, 3, 4]);
    expect(found[0]?.rawText).toBe(big);
    expect(found[0]?.reason).toBe(
      'number 12345678901234567890 cannot be read exactly (JavaScript reads it as 12345678901234567000): rejected rather than stored altered',
    );
    expect(found[1]?.reason).toMatch(
      /^number 1e400 cannot be read exactly \(JavaScript reads it as Infinity, which JSON writes as null\)/,
    );
    expect(found[2]?.reason).toMatch(/^number 1e-400 cannot be read exactly \(JavaScript reads it as 0\)/);
    // Digits inside strings are text, never numbers.
    expect(findUnexactNumbers(`{"data":[{"s":"12345678901234567890, 1e400"}],"hasMore":false}`)).toEqual([]);
    expect(findUnexactNumbers(`{"data":[${good},${good}],"hasMore":false}`)).toEqual([]);
  });

  it('normalisePage rejects them with the exact text kept', () => {
    const raw = JSON.parse('{"a":1}');
    const { events, rejects } = normalisePage([rawEvent(), raw], {
      unexact: [{ index: 1, reason: 'number 1e400 cannot be read exactly', rawText: '{"a":1e400}' }],
    });
    expect(events).toHaveLength(1);
    expect(rejects).toEqual([{ raw, reason: 'number 1e400 cannot be read exactly', rawText: '{"a":1e400}' }]);
  });
});

describe('upstream text before a terminal', () => {
  it('shows control characters, ANSI sequences, C1 CSI and bidi overrides as escapes', () => {
    expect(escapeText('bad\n\u001b[31mred\u001b[0m\u009b2J\u202eevil\r')).toBe(
      'bad\\u000a\\u001b[31mred\\u001b[0m\\u009b2J\\u202eevil\\u000d',
    );
    expect(escapeText('plain words, émoji 😀')).toBe('plain words, émoji 😀');
    expect(escapeText('x'.repeat(400))).toHaveLength(301);
  });

  it('masks secrets and URL credentials', () => {
    expect(maskSecrets("Invalid API key 'sk-secret-1'", ['sk-secret-1'])).toBe("Invalid API key '***'");
    expect(maskSecrets('a b', ['a'])).toBe('a b');
    expect(maskUrl('https://user:p4ss@api.example.com/api/v1')).toBe(
      'https://***:***@api.example.com/api/v1',
    );
    expect(maskUrl('ftp://me:pw@host/x')).not.toContain('pw');
    expect(maskUrl('not a url //me:pw@x')).not.toContain('pw');
  });
});

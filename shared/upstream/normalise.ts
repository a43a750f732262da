import type { UnexactEvent } from './numbers.ts';
import { EVENT_TYPES, type NormalisedEvent, type RejectedEvent } from './types.ts';

/*
 * Event normalisation, one event at a time: a bad event becomes one rejected row with a precise
 * reason, never a lost page and never a silently wrong date.
 *
 * Written by hand rather than with a zod schema per event because it runs on every row of
 * every 5000-event page: zod costs about 20 ms a page here, this about a tenth of that.
 *
 * Timestamp rules (parseTimestamp):
 * - Numbers (and strings that are plain decimal numbers) are epoch values. |n| < 1e11 is read as
 *   SECONDS, anything larger as MILLISECONDS: 1e11 s is the year 5138 and 1e11 ms is March 1973,
 *   so across the accepted range (2000-01-01 .. 2100-01-01) the two readings cannot be confused.
 *   Fractional values are rounded to the nearest millisecond.
 * - Strings may be ISO-8601 / RFC 3339 date-times: `YYYY-MM-DDTHH:MM[:SS[.fff…]]` followed by
 *   `Z` or a `±HH[:MM]` offset (`T` may be a space). Digits beyond milliseconds are truncated.
 *   A strict regex plus range checks is used instead of `Date.parse`, which accepts junk
 *   ("1", "2026-02-30" rolls over, engine-specific formats).
 * - An ISO string WITHOUT a time zone is rejected: it could be UTC or the producer's local time,
 *   and guessing would store a wrong instant with no trace. The reject row keeps the raw value.
 * - Whitespace, zero-width characters (U+200B-U+200D, U+2060, U+FEFF) and C0/C1 control
 *   characters around the value are stripped first; inside the value they make it unparseable.
 * - Instants outside 2000-01-01T00:00:00Z .. 2100-01-01T00:00:00Z are rejected as absurd (the
 *   data set spans December 2025 to January 2026).
 *
 * Other rules (each a reject with a reason, never a refused page):
 * - `type` must be one of the eight documented types (EVENT_TYPES), compared exactly: an unknown
 *   type is kept in rejected_events rather than stored, so a new type the API adds shows up there
 *   (and can be replayed) instead of silently widening the column's values.
 * - `properties` may nest at most MAX_PROPERTIES_DEPTH (1000) levels: JSON.stringify recurses, and
 *   a 10,000-deep object overflows the stack while the page is encoded; and may hold at most
 *   MAX_PROPERTIES_BYTES (16 MiB, estimated from its strings and scalars) so one row stays well
 *   inside what one page's write holds in memory. PostgreSQL itself takes far more (jsonb up to
 *   255 MB), and a row it still refuses is isolated and rejected by persistPage.
 * - a number JavaScript cannot read exactly (numbers.ts: 20-digit integers, 1e400, 1e-400) makes
 *   the event a reject; its exact text is kept.
 */

/** Deepest nesting of `properties` an event may have (the top object is level 1). */
export const MAX_PROPERTIES_DEPTH = 1000;
/** Largest `properties` an event may carry, estimated in UTF-8 bytes of its JSON. */
export const MAX_PROPERTIES_BYTES = 16 * 1024 * 1024;

const EVENT_TYPE_SET: ReadonlySet<string> = new Set(EVENT_TYPES);

/** Earliest accepted instant: 2000-01-01T00:00:00Z. */
export const MIN_TIMESTAMP_MS = Date.UTC(2000, 0, 1);
/** First rejected instant: 2100-01-01T00:00:00Z. */
export const MAX_TIMESTAMP_MS = Date.UTC(2100, 0, 1);
/** Epoch values with a smaller magnitude are seconds, larger are milliseconds (see the module comment). */
export const EPOCH_SECONDS_BELOW = 1e11;

const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)$/;
const ISO =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?$/;
/** PostgreSQL text and jsonb cannot hold U+0000 or unpaired surrogates: such a row would fail the whole page's insert. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function unstorable(s: string): boolean {
  return s.includes('\u0000') || LONE_SURROGATE.test(s);
}

export type NormaliseResult = { ok: true; event: NormalisedEvent } | { ok: false; reject: RejectedEvent };

type TimestampResult = { ok: true; ms: number } | { ok: false; reason: string };

/**
 * Parses one timestamp to epoch milliseconds UTC, or null when it cannot be read as one
 * unambiguous instant in 2000..2100. See the module comment for the accepted forms.
 */
export function parseTimestamp(value: unknown): number | null {
  const r = readTimestamp(value);
  return r.ok ? r.ms : null;
}

/** Normalises one raw event; never throws. */
export function normaliseEvent(raw: unknown): NormaliseResult {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { ok: false, reject: { raw, reason: `event: not an object (${describe(raw)})` } };
  }
  const o = raw as Record<string, unknown>;
  // A plain array, not a closure: a per-event closure costs more than the checks themselves.
  const problems: string[] = [];

  const id = readUuid(o.id, 'id', problems);
  const sessionId = readUuid(o.sessionId, 'sessionId', problems);
  const userId = readUuid(o.userId, 'userId', problems);

  const type = readString(o.type, 'type', problems);
  if (type === '') problems.push('type: empty');
  else if (type !== undefined && !EVENT_TYPE_SET.has(type)) {
    problems.push(`type: ${preview(type)} is not one of the documented types (${EVENT_TYPES.join(', ')})`);
  }
  const name = readString(o.name, 'name', problems);

  let occurredAtMs = 0;
  if (o.timestamp === undefined || o.timestamp === null) {
    problems.push('timestamp: missing');
  } else {
    const ts = readTimestamp(o.timestamp);
    if (ts.ok) occurredAtMs = ts.ms;
    else problems.push(`timestamp: ${ts.reason}`);
  }

  const properties = o.properties === undefined || o.properties === null ? {} : o.properties;
  const propertiesProblem = inspectProperties(properties);
  if (propertiesProblem !== null) problems.push(`properties: ${propertiesProblem}`);

  let deviceType: string | null = null;
  let browser: string | null = null;
  const session = o.session;
  if (typeof session === 'object' && session !== null && !Array.isArray(session)) {
    const s = session as Record<string, unknown>;
    deviceType = optionalString(s.deviceType, 'session.deviceType', problems);
    browser = optionalString(s.browser, 'session.browser', problems);
  } else if (session !== undefined && session !== null) {
    problems.push(`session: not an object (${describe(session)})`);
  }

  if (problems.length > 0) return { ok: false, reject: rejectOf(raw, problems.join('; ')) };
  return {
    ok: true,
    event: {
      id: id as string,
      sessionId: sessionId as string,
      userId: userId as string,
      type: type as string,
      name: name as string,
      properties,
      occurredAtMs,
      deviceType,
      browser,
    },
  };
}

/** The reject reason for an event that carried bytes that are not UTF-8. */
export const INVALID_UTF8_REASON =
  'shows U+FFFD in a page whose body held bytes that are not UTF-8 (decoded as U+FFFD): the value may have been altered, so it is not stored';

/**
 * Normalises a page's events one by one; order is kept within each list. `opts` is what the
 * client learnt of the body (an EventsPage can be passed as is): bytes that were not UTF-8, and
 * the events carrying numbers JavaScript cannot read exactly.
 */
export function normalisePage(
  data: unknown[],
  opts: { invalidUtf8?: boolean | undefined; unexact?: readonly UnexactEvent[] | undefined } = {},
): { events: NormalisedEvent[]; rejects: RejectedEvent[] } {
  const events: NormalisedEvent[] = [];
  const rejects: RejectedEvent[] = [];
  const unexact =
    opts.unexact && opts.unexact.length > 0 ? new Map(opts.unexact.map((u) => [u.index, u])) : null;
  for (let i = 0; i < data.length; i++) {
    const raw = data[i];
    const lossy = unexact?.get(i);
    if (lossy) {
      rejects.push({ raw, reason: lossy.reason, rawText: lossy.rawText });
      continue;
    }
    // Only in a page whose body was not valid UTF-8 (rare): a U+FFFD there may stand for bytes
    // the decoder replaced, and storing it would silently alter the value.
    if (opts.invalidUtf8 && showsReplacement(raw)) {
      rejects.push(rejectOf(raw, INVALID_UTF8_REASON));
      continue;
    }
    const r = normaliseEvent(raw);
    if (r.ok) events.push(r.event);
    else rejects.push(r.reject);
  }
  return { events, rejects };
}

/** Strips whitespace, zero-width and control characters from both ends; the common clean value is returned as is. */
export function stripAround(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && isStrippable(s.charCodeAt(start))) start++;
  while (end > start && isStrippable(s.charCodeAt(end - 1))) end--;
  return start === 0 && end === s.length ? s : s.slice(start, end);
}

function isStrippable(c: number): boolean {
  if (c <= 0x20) return true; // C0 controls and space
  if (c < 0x7f) return false; // the fast path: printable ASCII
  if (c <= 0xa0) return true; // DEL, C1 controls, no-break space
  return (
    (c >= 0x200b && c <= 0x200d) ||
    c === 0x2060 ||
    c === 0xfeff ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000
  );
}

function readUuid(v: unknown, field: string, problems: string[]): string | undefined {
  if (v === undefined || v === null) {
    problems.push(`${field}: missing`);
    return undefined;
  }
  if (typeof v !== 'string') {
    problems.push(`${field}: not a string (${describe(v)})`);
    return undefined;
  }
  const s = stripAround(v);
  const shape = uuidShape(s);
  if (shape === 0) {
    problems.push(`${field}: not a UUID ${preview(v)}`);
    return undefined;
  }
  return shape === 2 ? s.toLowerCase() : s;
}

/**
 * 0: not a UUID (8-4-4-4-12 hex digits, any version); 1: lower-case UUID; 2: UUID with upper-case
 * digits. A char-code loop: three case-insensitive regex tests per event cost more than all the rest.
 */
function uuidShape(s: string): 0 | 1 | 2 {
  if (s.length !== 36) return 0;
  let upper = false;
  for (let i = 0; i < 36; i++) {
    const c = s.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 0x2d) return 0;
    } else if ((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66)) {
      // digit or a-f
    } else if (c >= 0x41 && c <= 0x46) {
      upper = true;
    } else {
      return 0;
    }
  }
  return upper ? 2 : 1;
}

function readString(v: unknown, field: string, problems: string[]): string | undefined {
  if (v === undefined || v === null) {
    problems.push(`${field}: missing`);
    return undefined;
  }
  if (typeof v !== 'string') {
    problems.push(`${field}: not a string (${describe(v)})`);
    return undefined;
  }
  const s = stripAround(v);
  if (unstorable(s)) {
    problems.push(
      `${field}: contains U+0000 or an unpaired surrogate, which PostgreSQL cannot store ${preview(v)}`,
    );
    return undefined;
  }
  return s;
}

/** Absent, null or blank means "not reported": null, never an empty string. */
function optionalString(v: unknown, field: string, problems: string[]): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') {
    problems.push(`${field}: not a string (${describe(v)})`);
    return null;
  }
  const s = stripAround(v);
  if (unstorable(s)) {
    problems.push(
      `${field}: contains U+0000 or an unpaired surrogate, which PostgreSQL cannot store ${preview(v)}`,
    );
    return null;
  }
  return s === '' ? null : s;
}

function readTimestamp(value: unknown): TimestampResult {
  if (typeof value === 'number') return fromEpoch(value, value);
  if (typeof value !== 'string') {
    return { ok: false, reason: `not a number or string (${describe(value)})` };
  }
  const s = stripAround(value);
  if (s === '') return { ok: false, reason: `empty string ${preview(value)}` };
  const first = s.charCodeAt(0);
  // ISO strings start with four digits and a dash; everything else numeric is an epoch value.
  if (s.length > 4 && s.charCodeAt(4) === 0x2d /* - */ && first >= 0x30 && first <= 0x39) {
    return fromIso(s, value);
  }
  if (DECIMAL.test(s)) return fromEpoch(Number(s), value);
  return { ok: false, reason: `unparseable value ${preview(value)}` };
}

function fromEpoch(n: number, raw: unknown): TimestampResult {
  if (!Number.isFinite(n)) return { ok: false, reason: `not a finite number ${preview(raw)}` };
  const seconds = Math.abs(n) < EPOCH_SECONDS_BELOW;
  const ms = Math.round(seconds ? n * 1000 : n);
  if (ms < MIN_TIMESTAMP_MS || ms >= MAX_TIMESTAMP_MS) {
    return {
      ok: false,
      reason: `${preview(raw)} read as epoch ${seconds ? 'seconds' : 'milliseconds'} is outside 2000-01-01..2100-01-01`,
    };
  }
  return { ok: true, ms };
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function fromIso(s: string, raw: unknown): TimestampResult {
  const fast = canonicalIso(s);
  if (fast !== null) return { ok: true, ms: fast };
  const m = ISO.exec(s);
  if (m === null) return { ok: false, reason: `unparseable value ${preview(raw)}` };
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = m[6] === undefined ? 0 : Number(m[6]);
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const monthDays = month === 2 && leap ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0);
  if (month < 1 || month > 12 || day < 1 || day > monthDays || hour > 23 || minute > 59 || second > 59) {
    return { ok: false, reason: `unparseable value ${preview(raw)}` };
  }
  if (m[8] === undefined && m[9] === undefined) {
    return {
      ok: false,
      reason: `ISO date-time without a time zone ${preview(raw)} (no Z or ±hh:mm offset): refusing to guess one`,
    };
  }
  let offsetMin = 0;
  if (m[9] !== undefined) {
    const oh = Number(m[10]);
    const om = m[11] === undefined ? 0 : Number(m[11]);
    if (oh > 23 || om > 59) return { ok: false, reason: `unparseable value ${preview(raw)}` };
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const frac = m[7];
  const millis = frac === undefined ? 0 : Number(frac.length >= 3 ? frac.slice(0, 3) : frac.padEnd(3, '0'));
  // Date.UTC maps years 0..99 to 1900..1999; setUTCFullYear does not, but those years are rejected below anyway.
  const ms = Date.UTC(year, month - 1, day, hour, minute, second, millis) - offsetMin * 60_000;
  if (ms < MIN_TIMESTAMP_MS || ms >= MAX_TIMESTAMP_MS) {
    return { ok: false, reason: `${preview(raw)} is outside 2000-01-01..2100-01-01` };
  }
  return { ok: true, ms };
}

/**
 * The form the live service sends, `YYYY-MM-DDTHH:MM:SS.sssZ`, read by position. Returns null for
 * anything else (including out-of-range fields), which then takes the general path and gets its
 * precise reason there.
 */
function canonicalIso(s: string): number | null {
  if (
    s.length !== 24 ||
    s.charCodeAt(4) !== 0x2d ||
    s.charCodeAt(7) !== 0x2d ||
    s.charCodeAt(10) !== 0x54 /* T */ ||
    s.charCodeAt(13) !== 0x3a ||
    s.charCodeAt(16) !== 0x3a ||
    s.charCodeAt(19) !== 0x2e ||
    s.charCodeAt(23) !== 0x5a /* Z */
  ) {
    return null;
  }
  const year = digits(s, 0, 4);
  const month = digits(s, 5, 2);
  const day = digits(s, 8, 2);
  const hour = digits(s, 11, 2);
  const minute = digits(s, 14, 2);
  const second = digits(s, 17, 2);
  const millis = digits(s, 20, 3);
  // digits() gives -1 for a non-digit, so the lower bounds also reject those.
  if (year < 2000 || year > 2099 || month < 1 || month > 12 || day < 1) return null;
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59 || millis < 0)
    return null;
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  if (day > (month === 2 && leap ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0))) return null;
  return Date.UTC(year, month - 1, day, hour, minute, second, millis);
}

/** The decimal value of `len` ASCII digits at `at`, or -1 when one is not a digit. */
function digits(s: string, at: number, len: number): number {
  let n = 0;
  for (let i = at; i < at + len; i++) {
    const d = s.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/**
 * Why `properties` cannot be stored, or null: walked iteratively (a deeply nested payload must
 * not overflow the stack here either), depth and estimated size counted on the way.
 */
function inspectProperties(value: unknown): string | null {
  if (typeof value === 'string') {
    if (unstorable(value)) return UNSTORABLE_PROPERTIES;
    return value.length * 3 > MAX_PROPERTIES_BYTES ? tooBig(value.length) : null;
  }
  if (typeof value !== 'object' || value === null) return null;
  // The common case, a flat object of short values ({"page":"/home"}), without the walk's stacks.
  if (!Array.isArray(value)) {
    let flat = true;
    for (const k in value) {
      const v = (value as Record<string, unknown>)[k];
      if (typeof v === 'object' && v !== null) {
        flat = false;
        break;
      }
      if (unstorable(k) || (typeof v === 'string' && (v.length > 4096 || unstorable(v)))) {
        flat = false;
        break;
      }
    }
    if (flat) return null;
  }
  const stack: unknown[] = [value];
  const depths: number[] = [1];
  let bytes = 0;
  while (stack.length > 0) {
    const v = stack.pop();
    const depth = depths.pop() as number;
    if (typeof v === 'string') {
      if (unstorable(v)) return UNSTORABLE_PROPERTIES;
      bytes += v.length + 2;
    } else if (typeof v === 'object' && v !== null) {
      if (depth > MAX_PROPERTIES_DEPTH) {
        return `nested deeper than ${MAX_PROPERTIES_DEPTH} levels (MAX_PROPERTIES_DEPTH), which this pipeline does not store`;
      }
      bytes += 2;
      if (Array.isArray(v)) {
        for (const x of v) {
          stack.push(x);
          depths.push(depth + 1);
          bytes += 1;
        }
      } else {
        for (const k in v) {
          if (unstorable(k)) return UNSTORABLE_PROPERTIES;
          stack.push((v as Record<string, unknown>)[k]);
          depths.push(depth + 1);
          bytes += k.length + 4;
        }
      }
    } else {
      bytes += 8;
    }
    if (bytes > MAX_PROPERTIES_BYTES) return tooBig(bytes);
  }
  return null;
}

const UNSTORABLE_PROPERTIES = 'contains U+0000 or an unpaired surrogate, which PostgreSQL jsonb cannot store';

function tooBig(bytes: number): string {
  return `more than ${MAX_PROPERTIES_BYTES} bytes (about ${bytes} counted, MAX_PROPERTIES_BYTES), which this pipeline does not store`;
}

/** A reject whose raw text is kept exactly when JSON.stringify can write it, cut at the depth limit when it cannot. */
function rejectOf(raw: unknown, reason: string): RejectedEvent {
  try {
    JSON.stringify(raw);
    return { raw, reason };
  } catch {
    return { raw, reason, rawText: boundedJson(raw) };
  }
}

/** JSON text of `raw` with everything below MAX_PROPERTIES_DEPTH levels replaced by a marker string. */
export function boundedJson(raw: unknown): string {
  const cut = (v: unknown, depth: number): unknown => {
    if (typeof v !== 'object' || v === null) return v;
    if (depth >= MAX_PROPERTIES_DEPTH) return `<cut: nested deeper than ${MAX_PROPERTIES_DEPTH} levels>`;
    if (Array.isArray(v)) return v.map((x) => cut(x, depth + 1));
    const out: Record<string, unknown> = {};
    for (const k in v) out[k] = cut((v as Record<string, unknown>)[k], depth + 1);
    return out;
  };
  return JSON.stringify(cut(raw, 0)) ?? String(raw);
}

/** A U+FFFD anywhere in the value, keys included (iterative, like inspectProperties). */
function showsReplacement(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      if (v.includes('\ufffd')) return true;
    } else if (Array.isArray(v)) {
      for (const x of v) stack.push(x);
    } else if (typeof v === 'object' && v !== null) {
      for (const k in v) {
        if (k.includes('\ufffd')) return true;
        stack.push((v as Record<string, unknown>)[k]);
      }
    }
  }
  return false;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object') return 'object';
  if (typeof v === 'string') return `string ${preview(v)}`;
  return `${typeof v} ${String(v)}`;
}

function preview(v: unknown): string {
  if (typeof v !== 'string') return String(v);
  const text = v;
  const shown = text.length > 60 ? `${text.slice(0, 60)}…` : text;
  // JSON.stringify makes invisible characters (\u200b, \u0000, …) visible in the reason.
  return JSON.stringify(shown).replace(
    /[\u007f-\u009f\u200b-\u200d\u2060\ufeff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

import { EVENT_TYPES, type EventType } from '#shared/upstream/types.ts';
import { hash3, mix32, SALT, unit, unmix32 } from './hash.ts';

/*
 * The simulator's deterministic data set. Nothing is materialised: every event is a pure function
 * of (seed, index), so a page anywhere in a 3,000,000-event set costs the same as page one.
 *
 * index -> timestamp: a monotone formula `END - floor((i + u_i) * step)` with a hashed jitter
 *   u_i in [0, 1), so timestamps strictly decrease; about one index in a thousand is flagged a
 *   "tie" and repeats its predecessor's timestamp (the 5000-event capture has five tied pairs).
 * index -> key: the identity, except inside a run of equal timestamps, whose keys are reordered so
 *   that ids descend (the service orders ties by id descending, as the capture shows).
 * key -> slot: a Feistel permutation inside blocks of 1024 keys, so a session's events interleave
 *   with about twenty others over about twenty minutes, as sessions do in the capture.
 * slot -> session: binary search in the prefix sums of the session sizes (35 to 70 events each).
 * key -> id, type, name; session -> sessionId, user, device, browser: hashes. The first 32 bits of
 *   an id are a bijection of the key, so ids are unique and an id maps back to its index.
 */

/** Newest instant of the data set: the capture's first event is 2026-01-27T19:20:12.369Z. */
export const DATASET_END_MS = Date.UTC(2026, 0, 27, 19, 20, 30);
/** Oldest instant: late December 2025. */
export const DATASET_START_MS = Date.UTC(2025, 11, 20);
/** Probability that an event repeats its predecessor's timestamp (5 tied pairs per 5000 in the capture). */
export const TIE_PROBABILITY = 0.001;
/** Largest supported data set: indices and keys must stay far below 2^32. */
export const MAX_EVENTS = 100_000_000;

const SESSION_MIN = 35;
const SESSION_MAX = 70;
const EVENTS_PER_SESSION = 50;
const EVENTS_PER_USER = 1000;
const BLOCK = 1024;
const BLOCK_HALF_BITS = 5;

/** The service's type totals for 3,000,000 events; the generator draws types in these proportions. */
export const TYPE_TOTALS: Readonly<Record<EventType, number>> = {
  page_view: 1_050_459,
  click: 749_415,
  api_call: 300_487,
  form_submit: 299_557,
  scroll: 150_594,
  purchase: 150_087,
  error: 149_884,
  video_play: 149_517,
};

const DEVICE_TYPES = ['mobile', 'tablet', 'desktop'] as const;
const BROWSERS = ['Chrome', 'Firefox', 'Safari', 'Edge'] as const;
const NAME_SPACE = 36 ** 6;

/** Per-event fault rates: each decided once per index, so an event is faulty every time it is served. */
export interface EventFaultRates {
  /** The timestamp is replaced by an unparseable value: the event is a reject. */
  malformedTimestampRate: number;
  /** One required field (sessionId, userId, type, name or timestamp) is left out: the event is a reject. */
  missingFieldRate: number;
  /** The timestamp is sent as epoch SECONDS with a millisecond fraction: still the same instant. */
  epochSecondsRate: number;
  /** The timestamp string is wrapped in zero-width/control characters: still the same instant. */
  controlCharRate: number;
}

export const MISSABLE_FIELDS = ['sessionId', 'userId', 'type', 'name', 'timestamp'] as const;
export type MissableField = (typeof MISSABLE_FIELDS)[number];

const MALFORMED_VALUES = ['Invalid Date', '', '2026-13-45T99:99:99.999Z', 'NaN'] as const;
const CONTROL_WRAPS: ReadonlyArray<readonly [string, string]> = [
  ['\u200b', ''],
  ['', '\u0007'],
  ['\ufeff', '\r\n'],
  ['\t', '\u200d'],
];

export type EventFault =
  | { kind: 'malformedTimestamp'; value: string }
  | { kind: 'missingField'; field: MissableField }
  | { kind: 'epochSeconds' }
  | { kind: 'controlChar'; prefix: string; suffix: string };

/** One event as generated (clean values; `fault` says how it is altered when served). */
export interface SimEvent {
  index: number;
  id: string;
  sessionId: string;
  userId: string;
  type: EventType;
  name: string;
  properties: { page: string };
  /** The event's instant, epoch ms. */
  timestampMs: number;
  /** The clean serialised form: epoch ms number when index % 3 === 0, else ISO with ms and Z. */
  timestamp: number | string;
  session: { id: string; deviceType: string; browser: string };
  fault: EventFault | null;
}

export interface DatasetOptions {
  events: number;
  seed: number;
  faults?: Partial<EventFaultRates>;
}

export interface Dataset {
  readonly total: number;
  readonly seed: number;
  readonly sessionCount: number;
  readonly userCount: number;
  readonly faultRates: Readonly<EventFaultRates>;
  /** The event at a position of the newest-first order (0 = newest). */
  eventAt(index: number): SimEvent;
  idAt(index: number): string;
  /** Epoch ms of the event at `index`. */
  timestampAt(index: number): number;
  /** The first index strictly after the position (ts, id) in (timestamp desc, id desc) order; `total` when none. */
  indexAfter(ts: number, id: string): number;
  /** The index of an event id, or null when the id is not in the data set. */
  indexOfId(id: string): number | null;
  /** How the event at `index` is altered when served, or null when it is served clean. */
  faultFor(index: number): EventFault | null;
  /** false when the served event cannot be normalised (malformed timestamp or a missing required field). */
  isValid(index: number): boolean;
  /** Number of events a correct pipeline stores (total minus the rejects). Computed once, about 50 ms for 3M. */
  expectedValidCount(): number;
  /** Indices of the events a correct pipeline rejects, ascending. */
  rejectedIndices(): number[];
  /** The event at `index` as the server sends it (JSON text, faults applied). */
  serialiseEvent(index: number): string;
  /**
   * Events [start, end) as the server sends them, comma-joined (the inside of the `data` array),
   * with the per-kind fault counts. Sequential and several times faster than serialiseEvent per index.
   */
  serialiseRange(
    start: number,
    end: number,
  ): { json: string; faults: Partial<Record<EventFault['kind'], number>> };
}

/** Builds the deterministic data set. Throws RangeError on a size outside 1..MAX_EVENTS. */
export function createDataset(options: DatasetOptions): Dataset {
  const total = options.events;
  if (!Number.isInteger(total) || total < 1 || total > MAX_EVENTS) {
    throw new RangeError(`events must be an integer from 1 to ${MAX_EVENTS}, got ${total}`);
  }
  const seed = mix32((options.seed ^ SALT.seed) >>> 0);
  const faultRates: EventFaultRates = {
    malformedTimestampRate: options.faults?.malformedTimestampRate ?? 0,
    missingFieldRate: options.faults?.missingFieldRate ?? 0,
    epochSecondsRate: options.faults?.epochSecondsRate ?? 0,
    controlCharRate: options.faults?.controlCharRate ?? 0,
  };
  const faultEdges = [
    faultRates.malformedTimestampRate,
    faultRates.malformedTimestampRate + faultRates.missingFieldRate,
    faultRates.malformedTimestampRate + faultRates.missingFieldRate + faultRates.epochSecondsRate,
    faultRates.malformedTimestampRate +
      faultRates.missingFieldRate +
      faultRates.epochSecondsRate +
      faultRates.controlCharRate,
  ] as const;
  const anyFaults = faultEdges[3] > 0;

  const step = (DATASET_END_MS - DATASET_START_MS) / total;
  const tieThreshold = Math.floor(TIE_PROBABILITY * 4294967296);
  const idSeed = mix32((seed ^ SALT.eventId0) >>> 0);
  const sessionSeed = mix32((seed ^ SALT.sessionId) >>> 0);
  const userSeed = mix32((seed ^ SALT.userId) >>> 0);

  // Session sizes, adjusted round-robin so they sum to exactly `total` while staying in 35..70.
  const sessionCount = Math.max(1, Math.round(total / EVENTS_PER_SESSION));
  const userCount = Math.max(1, Math.round(total / EVENTS_PER_USER));
  const minSize = Math.min(SESSION_MIN, Math.floor(total / sessionCount));
  const maxSize = Math.max(SESSION_MAX, Math.ceil(total / sessionCount));
  const sizes = new Int32Array(sessionCount);
  let sum = 0;
  for (let s = 0; s < sessionCount; s++) {
    const size = minSize + (hash3(seed, s, SALT.sessionSize) % (maxSize - minSize + 1));
    sizes[s] = size;
    sum += size;
  }
  let diff = total - sum;
  while (diff !== 0) {
    for (let s = 0; s < sessionCount && diff !== 0; s++) {
      const size = sizes[s]!;
      if (diff < 0 && size > minSize) {
        sizes[s] = size - 1;
        diff++;
      } else if (diff > 0 && size < maxSize) {
        sizes[s] = size + 1;
        diff--;
      }
    }
  }
  const prefix = new Float64Array(sessionCount + 1);
  for (let s = 0; s < sessionCount; s++) prefix[s + 1] = prefix[s]! + sizes[s]!;

  const typeEdges: number[] = [];
  {
    const all = Object.values(TYPE_TOTALS).reduce((a, b) => a + b, 0);
    let acc = 0;
    for (const t of EVENT_TYPES) {
      acc += TYPE_TOTALS[t];
      typeEdges.push(Math.floor((acc / all) * 4294967296));
    }
  }

  function rawTs(i: number): number {
    return DATASET_END_MS - Math.floor((i + unit(hash3(seed, i, SALT.jitter))) * step);
  }
  function isTie(i: number): boolean {
    return i > 0 && hash3(seed, i, SALT.tie) < tieThreshold;
  }
  function timestampAt(i: number): number {
    let j = i;
    while (j > 0 && isTie(j)) j--;
    return rawTs(j);
  }

  function uuid(w0: number, w1: number, w2: number, w3: number): string {
    // Table lookups: Number#toString(16) plus padding was the hottest line of page generation.
    const w4 = mix32((w2 ^ w3) >>> 0);
    return (
      HEX[w0 >>> 24]! +
      HEX[(w0 >>> 16) & 255]! +
      HEX[(w0 >>> 8) & 255]! +
      HEX[w0 & 255]! +
      '-' +
      HEX[w1 >>> 24]! +
      HEX[(w1 >>> 16) & 255]! +
      '-4' +
      HEX_LOW[(w1 >>> 8) & 15]! +
      HEX[w1 & 255]! +
      '-' +
      VARIANT[w2 >>> 30]! +
      HEX_LOW[(w2 >>> 16) & 15]! +
      HEX[(w2 >>> 8) & 255]! +
      '-' +
      HEX[w4 >>> 24]! +
      HEX[(w4 >>> 16) & 255]! +
      HEX[w3 >>> 24]! +
      HEX[(w3 >>> 16) & 255]! +
      HEX[(w3 >>> 8) & 255]! +
      HEX[w3 & 255]!
    );
  }
  function idOfKey(key: number): string {
    return uuid(
      mix32((key ^ idSeed) >>> 0),
      hash3(seed, key, SALT.eventId1),
      hash3(seed, key, SALT.eventId2),
      hash3(seed, key, SALT.eventId3),
    );
  }

  /** Keys of the run of equal timestamps around `i`, ordered by id descending, and where the run starts. */
  function tieRun(i: number): { start: number; keys: number[]; ids: string[] } | null {
    const t = timestampAt(i);
    let j = i;
    while (j > 0 && timestampAt(j - 1) === t) j--;
    let k = i;
    while (k < total - 1 && timestampAt(k + 1) === t) k++;
    if (j === k) return null;
    const pairs: Array<{ key: number; id: string }> = [];
    for (let x = j; x <= k; x++) pairs.push({ key: x, id: idOfKey(x) });
    pairs.sort((p, q) => (p.id < q.id ? 1 : p.id > q.id ? -1 : 0));
    return { start: j, keys: pairs.map((p) => p.key), ids: pairs.map((p) => p.id) };
  }
  function keyAt(i: number): number {
    const run = tieRun(i);
    return run ? run.keys[i - run.start]! : i;
  }

  function permute(x: number, m: number, k: number): number {
    if (m <= 1) return x;
    let half = BLOCK_HALF_BITS;
    if (m !== BLOCK) {
      const bits = Math.max(2, Math.ceil(Math.log2(m)));
      half = Math.ceil(bits / 2);
    }
    const mask = (1 << half) - 1;
    do {
      let left = x >>> half;
      let right = x & mask;
      for (let r = 0; r < 4; r++) {
        const next = left ^ (hash3(k, right, SALT.feistel + r) & mask);
        left = right;
        right = next;
      }
      x = (left << half) | right;
    } while (x >= m);
    return x;
  }
  function sessionOfKey(key: number): number {
    const block = Math.floor(key / BLOCK);
    const start = block * BLOCK;
    const slot = start + permute(key - start, Math.min(BLOCK, total - start), (seed ^ block) >>> 0);
    let lo = 0;
    let hi = sessionCount - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (prefix[mid]! <= slot) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  interface SessionInfo {
    id: string;
    userId: string;
    deviceType: string;
    browser: string;
  }
  // Pages touch about a hundred sessions; a small cache saves re-deriving their ids per event.
  const sessionCache = new Map<number, SessionInfo>();
  function sessionInfo(s: number): SessionInfo {
    const hit = sessionCache.get(s);
    if (hit) return hit;
    const user = hash3(seed, s, SALT.sessionUser) % userCount;
    const info: SessionInfo = {
      id: uuid(
        mix32((s ^ sessionSeed) >>> 0),
        hash3(sessionSeed, s, SALT.eventId1),
        hash3(sessionSeed, s, SALT.eventId2),
        hash3(sessionSeed, s, SALT.eventId3),
      ),
      userId: uuid(
        mix32((user ^ userSeed) >>> 0),
        hash3(userSeed, user, SALT.eventId1),
        hash3(userSeed, user, SALT.eventId2),
        hash3(userSeed, user, SALT.eventId3),
      ),
      deviceType: DEVICE_TYPES[hash3(seed, s, SALT.sessionDevice) % DEVICE_TYPES.length]!,
      browser: BROWSERS[hash3(seed, s, SALT.sessionBrowser) % BROWSERS.length]!,
    };
    if (sessionCache.size >= 4096) sessionCache.clear();
    sessionCache.set(s, info);
    return info;
  }

  function typeOfKey(key: number): EventType {
    const h = hash3(seed, key, SALT.type);
    for (let t = 0; t < typeEdges.length; t++) if (h < typeEdges[t]!) return EVENT_TYPES[t]!;
    return EVENT_TYPES[EVENT_TYPES.length - 1]!;
  }
  function nameOfKey(key: number): string {
    return `event_${(hash3(seed, key, SALT.name) % NAME_SPACE).toString(36).padStart(6, '0')}`;
  }

  function faultFor(index: number): EventFault | null {
    if (!anyFaults) return null;
    const u = unit(hash3(seed, index, SALT.fault));
    if (u >= faultEdges[3]) return null;
    const detail = hash3(seed, index, SALT.faultDetail);
    if (u < faultEdges[0]) {
      return { kind: 'malformedTimestamp', value: MALFORMED_VALUES[detail % MALFORMED_VALUES.length]! };
    }
    if (u < faultEdges[1])
      return { kind: 'missingField', field: MISSABLE_FIELDS[detail % MISSABLE_FIELDS.length]! };
    if (u < faultEdges[2]) return { kind: 'epochSeconds' };
    const [prefix, suffix] = CONTROL_WRAPS[detail % CONTROL_WRAPS.length]!;
    return { kind: 'controlChar', prefix, suffix };
  }
  function isValid(index: number): boolean {
    const f = faultFor(index);
    return f === null || f.kind === 'epochSeconds' || f.kind === 'controlChar';
  }

  function checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= total) {
      throw new RangeError(`index ${index} is outside the data set (0..${total - 1})`);
    }
  }

  function eventAt(index: number): SimEvent {
    checkIndex(index);
    const key = keyAt(index);
    const s = sessionInfo(sessionOfKey(key));
    const ms = timestampAt(index);
    return {
      index,
      id: idOfKey(key),
      sessionId: s.id,
      userId: s.userId,
      type: typeOfKey(key),
      name: nameOfKey(key),
      properties: { page: '/home' },
      timestampMs: ms,
      timestamp: index % 3 === 0 ? ms : new Date(ms).toISOString(),
      session: { id: s.id, deviceType: s.deviceType, browser: s.browser },
      fault: faultFor(index),
    };
  }

  function serialiseEvent(index: number): string {
    checkIndex(index);
    return serialise(index, keyAt(index), timestampAt(index));
  }

  // toISOString allocates a Date per event; the day prefix changes about every 77 events at 3M,
  // so it is cached and the time of day is assembled from padded tables.
  let isoDay = Number.NaN;
  let isoPrefix = '';
  function iso(ms: number): string {
    const day = ms - (((ms % DAY_MS) + DAY_MS) % DAY_MS);
    if (day !== isoDay) {
      isoDay = day;
      isoPrefix = new Date(day).toISOString().slice(0, 11);
    }
    let rem = ms - day;
    const h = Math.floor(rem / 3_600_000);
    rem -= h * 3_600_000;
    const m = Math.floor(rem / 60_000);
    rem -= m * 60_000;
    const sec = Math.floor(rem / 1000);
    return `${isoPrefix}${PAD2[h]}:${PAD2[m]}:${PAD2[sec]}.${PAD3[rem - sec * 1000]}Z`;
  }

  function serialise(index: number, key: number, ms: number): string {
    const s = sessionInfo(sessionOfKey(key));
    const id = idOfKey(key);
    const f = faultFor(index);
    let ts: string;
    if (f === null || f.kind === 'missingField') {
      ts = index % 3 === 0 ? String(ms) : `"${iso(ms)}"`;
    } else if (f.kind === 'malformedTimestamp') ts = JSON.stringify(f.value);
    else if (f.kind === 'epochSeconds') ts = String(ms / 1000);
    else ts = JSON.stringify(`${f.prefix}${iso(ms)}${f.suffix}`);
    if (f === null) {
      return `{"id":"${id}","sessionId":"${s.id}","userId":"${s.userId}","type":"${typeOfKey(key)}","name":"${nameOfKey(key)}","properties":{"page":"/home"},"timestamp":${ts},"session":{"id":"${s.id}","deviceType":"${s.deviceType}","browser":"${s.browser}"}}`;
    }
    const missing = f.kind === 'missingField' ? f.field : null;
    let out = `{"id":"${id}"`;
    if (missing !== 'sessionId') out += `,"sessionId":"${s.id}"`;
    if (missing !== 'userId') out += `,"userId":"${s.userId}"`;
    if (missing !== 'type') out += `,"type":"${typeOfKey(key)}"`;
    if (missing !== 'name') out += `,"name":"${nameOfKey(key)}"`;
    out += ',"properties":{"page":"/home"}';
    if (missing !== 'timestamp') out += `,"timestamp":${ts}`;
    out += `,"session":{"id":"${s.id}","deviceType":"${s.deviceType}","browser":"${s.browser}"}}`;
    return out;
  }

  function serialiseRange(start: number, end: number) {
    const faults: Partial<Record<EventFault['kind'], number>> = {};
    if (start >= end) return { json: '', faults };
    checkIndex(start);
    checkIndex(end - 1);
    // Timestamps for the range plus one on each side, with tie chains resolved by carrying the
    // previous value forward instead of walking back per index.
    const n = end - start;
    const ts = new Float64Array(n + 2);
    const first = start > 0 ? start - 1 : start;
    let prev = timestampAt(first);
    for (let i = first; i <= Math.min(end, total - 1); i++) {
      const t = i === first ? prev : isTie(i) ? prev : rawTs(i);
      ts[i - start + 1] = t;
      prev = t;
    }
    const parts: string[] = new Array(n);
    let i = start;
    while (i < end) {
      const t = ts[i - start + 1]!;
      const tiedBefore = i > 0 && ts[i - start]! === t;
      const tiedAfter = i < total - 1 && ts[i - start + 2]! === t;
      if (!tiedBefore && !tiedAfter) {
        parts[i - start] = serialise(i, i, t);
        const f = faultFor(i);
        if (f) faults[f.kind] = (faults[f.kind] ?? 0) + 1;
        i++;
        continue;
      }
      const run = tieRun(i)!;
      for (let x = i; x < Math.min(end, run.start + run.keys.length); x++) {
        parts[x - start] = serialise(x, run.keys[x - run.start]!, t);
        const f = faultFor(x);
        if (f) faults[f.kind] = (faults[f.kind] ?? 0) + 1;
        i = x + 1;
      }
    }
    return { json: parts.join(','), faults };
  }

  function idAt(index: number): string {
    checkIndex(index);
    return idOfKey(keyAt(index));
  }

  function indexAfter(ts: number, id: string): number {
    // The predicate "index i is strictly after (ts, id)" is monotone along the order.
    let lo = 0;
    let hi = total;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const t = timestampAt(mid);
      const after = t < ts || (t === ts && idOfKey(keyAt(mid)) < id);
      if (after) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  function indexOfId(id: string): number | null {
    if (!/^[0-9a-f]{8}-/.test(id)) return null;
    const key = (unmix32(Number.parseInt(id.slice(0, 8), 16)) ^ idSeed) >>> 0;
    if (key >= total || idOfKey(key) !== id) return null;
    const run = tieRun(key);
    return run ? run.start + run.keys.indexOf(key) : key;
  }

  let validCount: number | null = null;
  return {
    total,
    seed: options.seed,
    sessionCount,
    userCount,
    faultRates,
    eventAt,
    idAt,
    timestampAt(index: number) {
      checkIndex(index);
      return timestampAt(index);
    },
    indexAfter,
    indexOfId,
    faultFor,
    isValid,
    expectedValidCount() {
      if (validCount === null) {
        let n = 0;
        for (let i = 0; i < total; i++) if (isValid(i)) n++;
        validCount = n;
      }
      return validCount;
    },
    rejectedIndices() {
      const out: number[] = [];
      if (!anyFaults) return out;
      for (let i = 0; i < total; i++) if (!isValid(i)) out.push(i);
      return out;
    },
    serialiseEvent,
    serialiseRange,
  };
}

const DAY_MS = 86_400_000;
const PAD2: readonly string[] = Array.from({ length: 60 }, (_, i) => String(i).padStart(2, '0'));
const PAD3: readonly string[] = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));
const HEX: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const HEX_LOW: readonly string[] = Array.from({ length: 16 }, (_, i) => i.toString(16));
const VARIANT: readonly string[] = ['8', '9', 'a', 'b'];

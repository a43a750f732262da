import { hash3, SALT, unit } from './hash.ts';

/*
 * Ordering and positions: which instant and which key sit at each position of the newest-first
 * order.
 *
 * index -> timestamp: a monotone formula `END - floor((i + u_i) * step)` with a hashed jitter
 *   u_i in [0, 1), so timestamps strictly decrease; about one index in a thousand is flagged a
 *   "tie" and repeats its predecessor's timestamp (the 5000-event capture has five tied pairs).
 *   With a skew, the same formula runs piecewise: segments of the index range get their own step,
 *   a few "bursts" 2 ms per event and the gaps between them the rest of the span. Each segment
 *   starts where the previous one ends, so the order stays monotone, and each event keeps its own
 *   2 ms slot, so ties stay the flagged one in a thousand.
 * index -> key: the identity, except inside a run of equal timestamps, whose keys are reordered so
 *   that ids descend (the service orders ties by id descending, as the capture shows).
 */

/** Newest instant of the data set: the capture's first event is 2026-01-27T19:20:12.369Z. */
export const DATASET_END_MS = Date.UTC(2026, 0, 27, 19, 20, 30);
/** Oldest instant: late December 2025. */
export const DATASET_START_MS = Date.UTC(2025, 11, 20);
/** Probability that an event repeats its predecessor's timestamp (5 tied pairs per 5000 in the capture). */
export const TIE_PROBABILITY = 0.001;

/** Most events bunched into a few short intervals; everything else about the data set is unchanged. */
export interface TimestampSkew {
  /** Share of the events inside the bursts, from 0 (uniform) to below 1. */
  share: number;
  /** How many bursts, evenly spread over the span. */
  bursts: number;
}

/** Milliseconds per event inside a burst: dense (500 events a second), yet 1 ms or more so instants still descend. */
export const BURST_MS_PER_EVENT = 2;

/** A stretch of the index range with its own density: index `start` is `offset` ms before END. */
interface Segment {
  start: number;
  offset: number;
  step: number;
}

/** The segments of a skewed data set: gap, burst, gap, ..., burst, gap. */
function segmentsFor(total: number, skew: TimestampSkew): Segment[] {
  const span = DATASET_END_MS - DATASET_START_MS;
  const bursts = Math.max(1, Math.min(skew.bursts, total));
  const inBursts = Math.floor(total * skew.share);
  const sparse = total - inBursts;
  const sparseStep = (span - inBursts * BURST_MS_PER_EVENT) / Math.max(1, sparse);
  const share = (count: number, parts: number, k: number) =>
    Math.floor((count * (k + 1)) / parts) - Math.floor((count * k) / parts);
  const segments: Segment[] = [];
  let start = 0;
  let offset = 0;
  const push = (count: number, step: number) => {
    if (count === 0) return;
    segments.push({ start, offset, step });
    start += count;
    offset += count * step;
  };
  for (let b = 0; b < bursts; b++) {
    push(share(sparse, bursts + 1, b), sparseStep);
    push(share(inBursts, bursts, b), BURST_MS_PER_EVENT);
  }
  push(share(sparse, bursts + 1, bursts), sparseStep);
  return segments;
}

/** A run of equal timestamps: the keys in served order (id descending) and where the run starts. */
export interface TieRun {
  start: number;
  keys: number[];
  ids: string[];
}

export interface Timeline {
  /** Epoch ms at `i` before ties are applied. */
  rawTs(i: number): number;
  /** true when `i` repeats its predecessor's instant. */
  isTie(i: number): boolean;
  timestampAt(i: number): number;
  /** The run of equal timestamps around `i`, or null when `i` shares its instant with no neighbour. */
  tieRun(i: number): TieRun | null;
  keyAt(i: number): number;
  /** The index of a key (the inverse of keyAt). */
  indexOfKey(key: number): number;
  /** The first index strictly after (ts, id) in (timestamp desc, id desc) order; `total` when none. */
  indexAfter(ts: number, id: string): number;
  /** The first index whose timestamp is at or before `ts` (rows at `ts` included); `total` when none. */
  indexAtOrBefore(ts: number): number;
}

/** `seed` is the data set's mixed seed; `idOfKey` orders the keys of a tie. */
export function createTimeline(
  total: number,
  seed: number,
  idOfKey: (key: number) => string,
  skew?: TimestampSkew,
): Timeline {
  const step = (DATASET_END_MS - DATASET_START_MS) / total;
  const tieThreshold = Math.floor(TIE_PROBABILITY * 4294967296);
  const segments = skew && skew.share > 0 ? segmentsFor(total, skew) : null;

  function uniformTs(i: number): number {
    return DATASET_END_MS - Math.floor((i + unit(hash3(seed, i, SALT.jitter))) * step);
  }
  function skewedTs(i: number, segs: Segment[]): number {
    let lo = 0;
    let hi = segs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (segs[mid]!.start <= i) lo = mid;
      else hi = mid - 1;
    }
    const seg = segs[lo]!;
    const x = seg.offset + (i - seg.start + unit(hash3(seed, i, SALT.jitter))) * seg.step;
    // Never past the next segment's start, so rounding cannot break the order at a boundary.
    const next = segs[lo + 1];
    return DATASET_END_MS - Math.floor(next ? Math.min(x, next.offset) : x);
  }
  const rawTs = segments ? (i: number) => skewedTs(i, segments) : uniformTs;
  function isTie(i: number): boolean {
    return i > 0 && hash3(seed, i, SALT.tie) < tieThreshold;
  }
  function timestampAt(i: number): number {
    let j = i;
    while (j > 0 && isTie(j)) j--;
    return rawTs(j);
  }

  function tieRun(i: number): TieRun | null {
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

  return {
    rawTs,
    isTie,
    timestampAt,
    tieRun,
    keyAt,
    indexOfKey(key) {
      // Keys only move inside their run of equal timestamps, so the run around the key's own
      // index holds it.
      const run = tieRun(key);
      return run ? run.start + run.keys.indexOf(key) : key;
    },
    indexAfter(ts, id) {
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
    },
    indexAtOrBefore(ts) {
      let lo = 0;
      let hi = total;
      while (lo < hi) {
        const mid = Math.floor((lo + hi) / 2);
        if (timestampAt(mid) <= ts) hi = mid;
        else lo = mid + 1;
      }
      return lo;
    },
  };
}

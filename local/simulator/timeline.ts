import { hash3, SALT, unit } from './hash.ts';

/*
 * Ordering and positions: which instant and which key sit at each position of the newest-first
 * order.
 *
 * index -> timestamp: a monotone formula `END - floor((i + u_i) * step)` with a hashed jitter
 *   u_i in [0, 1), so timestamps strictly decrease; about one index in a thousand is flagged a
 *   "tie" and repeats its predecessor's timestamp (the 5000-event capture has five tied pairs).
 * index -> key: the identity, except inside a run of equal timestamps, whose keys are reordered so
 *   that ids descend (the service orders ties by id descending, as the capture shows).
 */

/** Newest instant of the data set: the capture's first event is 2026-01-27T19:20:12.369Z. */
export const DATASET_END_MS = Date.UTC(2026, 0, 27, 19, 20, 30);
/** Oldest instant: late December 2025. */
export const DATASET_START_MS = Date.UTC(2025, 11, 20);
/** Probability that an event repeats its predecessor's timestamp (5 tied pairs per 5000 in the capture). */
export const TIE_PROBABILITY = 0.001;

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
}

/** `seed` is the data set's mixed seed; `idOfKey` orders the keys of a tie. */
export function createTimeline(total: number, seed: number, idOfKey: (key: number) => string): Timeline {
  const step = (DATASET_END_MS - DATASET_START_MS) / total;
  const tieThreshold = Math.floor(TIE_PROBABILITY * 4294967296);

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
  };
}

import { hash3, SALT, unit } from './hash.ts';

/*
 * A data set that grows while it is served, as the live service's does: events arrive above
 * the newest one, and some arrive late, with instants below it. The base data set stays the pure
 * function of (seed, index) it is; grown events are kept in a sorted list beside it and merged
 * into the newest-first order on the fly. Every event keeps its (timestamp, id) for good, and the
 * service positions every issued cursor strictly after its (timestamp, id), so a cursor issued
 * before a growth still points at the same place in the order afterwards: the rows a walk has
 * not reached yet are still below it, and rows that arrive above it are (as on the live service)
 * seen only by a walk that starts again from page one.
 *
 * A grown event's id, type and name come from a key past the base's keys (so ids never collide
 * and map back to their keys); its session is a base session's. Grown events are served clean
 * (no per-event faults): the faults of the base stay where they were.
 */

/** One growth: `newer` events above the newest, `lateWithin` up to `lookbackMs` below it, `lateBeyond` further down. */
export interface GrowArgs {
  newer: number;
  /** Late events with instants in [newest - lookbackMs, newest]. */
  lateWithin?: number;
  /** Late events with instants in [newest - 2 * lookbackMs, newest - lookbackMs). */
  lateBeyond?: number;
  /** @default 600_000 (10 minutes: inside the pipeline's default 15-minute lookback) */
  lookbackMs?: number;
}

export interface GrowResult {
  added: number;
  total: number;
  /** The newest instant before and after this growth (epoch ms). */
  newestBeforeMs: number;
  newestMs: number;
}

/** Most events one growth may add: grown events are held in memory. */
export const MAX_GROWTH = 2_000_000;
export const DEFAULT_LATE_LOOKBACK_MS = 600_000;

/** What the growth needs of the base data set. */
export interface GrowthBase {
  total: number;
  seed: number;
  /** Mean milliseconds between two events of the base: grown events arrive at the same density. */
  meanStepMs: number;
  timestampAt(index: number): number;
  idOfKey(key: number): string;
  /** The base's first index strictly after (ts, id). */
  indexAfter(ts: number, id: string): number;
}

export interface Growth {
  /** Grown events so far. */
  readonly count: number;
  grow(args: GrowArgs): GrowResult;
  /** Newest instant of the whole data set. */
  newestMs(): number;
  /**
   * What sits at merged index m: `{grown: rank}` (rank 0 = the newest grown event) or
   * `{base: index}`.
   */
  locate(m: number): { grown: number } | { base: number };
  /** Grown events whose merged index is below m. */
  grownBefore(m: number): number;
  /** The merged index of the grown event at `rank`. */
  mergedOfRank(rank: number): number;
  /** Of the grown event at `rank`. */
  tsOf(rank: number): number;
  keyOf(rank: number): number;
  idOf(rank: number): string;
  /** Grown events ahead of (ts, id) in the order, (ts, id) itself included. */
  countAtOrAhead(ts: number, id: string): number;
  /** Grown events with an instant after `ts`. */
  countNewerThan(ts: number): number;
  /** Grown events ahead of base index b. */
  countBeforeBase(b: number): number;
  /** The rank of a grown id, or null. */
  rankOfId(id: string): number | null;
}

/*
 * Storage: parallel arrays in ascending order (oldest first, ties by id ascending), so that the
 * common growth (newer events) appends; rank r (0 = newest) is position count - 1 - r. `pos` is
 * the number of base events ahead of each grown event, which never changes (the base is fixed).
 */
export function createGrowth(base: GrowthBase): Growth {
  const ts: number[] = [];
  const keys: number[] = [];
  const ids: string[] = [];
  const pos: number[] = [];
  /** Instant of each grown id. */
  const byId = new Map<string, number>();
  const baseNewest = base.timestampAt(0);

  const n = () => ts.length;
  /** true when asc position i sorts before (t, id) in ascending order. */
  const below = (i: number, t: number, id: string) => ts[i]! < t || (ts[i] === t && ids[i]! < id);

  function insert(t: number, key: number): void {
    const id = base.idOfKey(key);
    let lo = 0;
    let hi = n();
    // Appends are the common case: check the end first.
    if (hi === 0 || below(hi - 1, t, id)) lo = hi;
    else {
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (below(mid, t, id)) lo = mid + 1;
        else hi = mid;
      }
    }
    const p = t > baseNewest ? 0 : base.indexAfter(t, id);
    if (lo === n()) {
      ts.push(t);
      keys.push(key);
      ids.push(id);
      pos.push(p);
    } else {
      ts.splice(lo, 0, t);
      keys.splice(lo, 0, key);
      ids.splice(lo, 0, id);
      pos.splice(lo, 0, p);
      // Ranks of the older events moved; the id map holds instants, not positions.
    }
    byId.set(id, t);
  }

  const newestMs = () => Math.max(baseNewest, n() > 0 ? ts[n() - 1]! : baseNewest);

  /** Desc rank -> asc position. */
  const at = (rank: number) => n() - 1 - rank;
  /** Merged index of the grown event at `rank`. */
  const mergedOf = (rank: number) => pos[at(rank)]! + rank;

  /** Grown events whose merged index is below m (merged indices increase with rank). */
  function grownBefore(m: number): number {
    let lo = 0;
    let hi = n();
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (mergedOf(mid) < m) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  function countAtOrAhead(t: number, id: string): number {
    // Grown events that are not below (t, id): asc positions from the first i with !below(i).
    let lo = 0;
    let hi = n();
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (below(mid, t, id)) lo = mid + 1;
      else hi = mid;
    }
    return n() - lo;
  }

  return {
    get count() {
      return n();
    },
    grow(args) {
      const newer = args.newer;
      const within = args.lateWithin ?? 0;
      const beyond = args.lateBeyond ?? 0;
      const lookbackMs = args.lookbackMs ?? DEFAULT_LATE_LOOKBACK_MS;
      for (const [name, v] of Object.entries({ newer, lateWithin: within, lateBeyond: beyond })) {
        if (!Number.isInteger(v) || v < 0) {
          throw new RangeError(`${name} must be a whole number of events, 0 or more, got ${v}`);
        }
      }
      if (!(Number.isInteger(lookbackMs) && lookbackMs >= 1)) {
        throw new RangeError(
          `lookbackMs must be a whole number of milliseconds, 1 or more, got ${lookbackMs}`,
        );
      }
      const added = newer + within + beyond;
      if (n() + added > MAX_GROWTH) {
        throw new RangeError(
          `a simulator holds at most ${MAX_GROWTH} grown events (${n()} now, ${added} asked): restart it to start over`,
        );
      }
      const before = newestMs();
      const step = Math.max(1, base.meanStepMs);
      let newest = before;
      const nextKey = () => base.total + n();
      for (let k = 0; k < newer; k++) {
        const key = nextKey();
        // The first event of a growth arrives at the newest instant itself (a tie at the
        // client's high-water mark); the others above it at the base's density.
        if (k > 0) newest += Math.max(1, Math.round(step * (0.5 + unit(hash3(base.seed, key, SALT.jitter)))));
        insert(newest, key);
      }
      for (let k = 0; k < within + beyond; k++) {
        const key = nextKey();
        const u = unit(hash3(base.seed, key, SALT.jitter));
        const t =
          k < within
            ? before - Math.floor(u * lookbackMs)
            : before - lookbackMs - 1 - Math.floor(u * (lookbackMs - 1));
        insert(t, key);
      }
      return { added, total: base.total + n(), newestBeforeMs: before, newestMs: newestMs() };
    },
    newestMs,
    locate(m) {
      const c = grownBefore(m);
      if (c < n() && mergedOf(c) === m) return { grown: c };
      return { base: m - c };
    },
    grownBefore,
    mergedOfRank: mergedOf,
    tsOf: (rank) => ts[at(rank)]!,
    keyOf: (rank) => keys[at(rank)]!,
    idOf: (rank) => ids[at(rank)]!,
    countAtOrAhead,
    countNewerThan(t) {
      let lo = 0;
      let hi = n();
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (ts[mid]! <= t) lo = mid + 1;
        else hi = mid;
      }
      return n() - lo;
    },
    countBeforeBase(b) {
      // Grown events with pos <= b come before base index b; pos grows as rank grows, i.e.
      // shrinks along the ascending storage.
      let lo = 0;
      let hi = n();
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (pos[at(mid)]! <= b) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    },
    rankOfId(id) {
      const t = byId.get(id);
      return t === undefined ? null : countAtOrAhead(t, id) - 1;
    },
  };
}

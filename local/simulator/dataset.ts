import type { EventType } from '#shared/upstream/types.ts';
import { createEventFaults, type EventFault, type EventFaultRates } from './event-faults.ts';
import { createEventFields } from './event-fields.ts';
import { createGrowth, type GrowArgs, type GrowResult } from './growth.ts';
import { mix32, SALT } from './hash.ts';
import { createSerialiser } from './serialise.ts';
import { createSessions } from './sessions.ts';
import { createTimeline, DATASET_END_MS, DATASET_START_MS, type TimestampSkew } from './timeline.ts';

/*
 * The simulator's deterministic data set. Nothing is materialised: every event is a pure function
 * of (seed, index), so a page anywhere in a 3,000,000-event set costs the same as page one.
 * The parts, each in its own module:
 *   timeline.ts      index -> instant and key: the newest-first order, ties, positions;
 *   event-fields.ts  key -> id, type, name (ids map back to keys);
 *   sessions.ts      key -> session -> sessionId, user, device, browser;
 *   event-faults.ts  index -> how the event is altered when served;
 *   serialise.ts     the JSON text the server sends;
 *   growth.ts        events added while the set is served (above the newest, and late ones), merged in.
 */

export {
  type EventFault,
  type EventFaultRates,
  MISSABLE_FIELDS,
  type MissableField,
} from './event-faults.ts';
export { TYPE_TOTALS } from './event-fields.ts';
export { DEFAULT_LATE_LOOKBACK_MS, type GrowArgs, type GrowResult, MAX_GROWTH } from './growth.ts';
export {
  BURST_MS_PER_EVENT,
  DATASET_END_MS,
  DATASET_START_MS,
  TIE_PROBABILITY,
  type TimestampSkew,
} from './timeline.ts';

/** Largest supported data set: indices and keys must stay far below 2^32. */
export const MAX_EVENTS = 100_000_000;

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
  /** Bunch most events into a few short intervals (default: spread evenly over the span). */
  skew?: TimestampSkew;
}

export interface Dataset {
  /** Events served now: the base's plus every grown one. */
  readonly total: number;
  /** Events added by {@link Dataset.grow} so far. */
  readonly grown: number;
  /**
   * Adds events: above the newest and late ones below it. Every event already there keeps its
   * (timestamp, id), so cursors issued before stay valid (growth.ts).
   */
  grow(args: GrowArgs): GrowResult;
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
  /** The first index whose timestamp is at or before `ts` (rows at `ts` included); `total` when none. */
  indexAtOrBefore(ts: number): number;
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
  const fields = createEventFields(seed);
  if (
    options.skew &&
    !(
      options.skew.share >= 0 &&
      options.skew.share < 1 &&
      Number.isInteger(options.skew.bursts) &&
      options.skew.bursts >= 1
    )
  ) {
    throw new RangeError(
      `skew needs a share from 0 to below 1 and at least one burst, got ${JSON.stringify(options.skew)}`,
    );
  }
  const timeline = createTimeline(total, seed, fields.idOfKey, options.skew);
  const sessions = createSessions(total, seed);
  const faults = createEventFaults(seed, options.faults);
  const { serialise, serialiseRange } = createSerialiser({ total, timeline, fields, sessions, faults });
  const { faultFor, isValid } = faults;

  function checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= total) {
      throw new RangeError(`index ${index} is outside the data set (0..${total - 1})`);
    }
  }

  let validCount: number | null = null;
  const base: Omit<Dataset, 'grown' | 'grow'> = {
    total,
    seed: options.seed,
    sessionCount: sessions.sessionCount,
    userCount: sessions.userCount,
    faultRates: faults.rates,
    eventAt(index) {
      checkIndex(index);
      const key = timeline.keyAt(index);
      const s = sessions.sessionInfo(sessions.sessionOfKey(key));
      const ms = timeline.timestampAt(index);
      return {
        index,
        id: fields.idOfKey(key),
        sessionId: s.id,
        userId: s.userId,
        type: fields.typeOfKey(key),
        name: fields.nameOfKey(key),
        properties: { page: '/home' },
        timestampMs: ms,
        timestamp: index % 3 === 0 ? ms : new Date(ms).toISOString(),
        session: { id: s.id, deviceType: s.deviceType, browser: s.browser },
        fault: faultFor(index),
      };
    },
    idAt(index) {
      checkIndex(index);
      return fields.idOfKey(timeline.keyAt(index));
    },
    timestampAt(index) {
      checkIndex(index);
      return timeline.timestampAt(index);
    },
    indexAfter: timeline.indexAfter,
    indexAtOrBefore: timeline.indexAtOrBefore,
    indexOfId(id) {
      const key = fields.keyOfId(id, total);
      return key === null ? null : timeline.indexOfKey(key);
    },
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
      if (!faults.any) return out;
      for (let i = 0; i < total; i++) if (!isValid(i)) out.push(i);
      return out;
    },
    serialiseEvent(index) {
      checkIndex(index);
      return serialise(index, timeline.keyAt(index), timeline.timestampAt(index));
    },
    serialiseRange(start, end) {
      if (start < end) {
        checkIndex(start);
        checkIndex(end - 1);
      }
      return serialiseRange(start, end);
    },
  };
  return withGrowth(base, {
    seed,
    meanStepMs: (DATASET_END_MS - DATASET_START_MS) / total,
    idOfKey: fields.idOfKey,
    event(key, ms) {
      const s = sessions.sessionInfo(sessions.sessionOfKey(key % total));
      return {
        id: fields.idOfKey(key),
        sessionId: s.id,
        userId: s.userId,
        type: fields.typeOfKey(key),
        name: fields.nameOfKey(key),
        session: { id: s.id, deviceType: s.deviceType, browser: s.browser },
        timestamp: key % 3 === 0 ? ms : new Date(ms).toISOString(),
      };
    },
  });
}

/** A grown event's clean fields, from its key and instant. */
type GrownFields = Pick<SimEvent, 'id' | 'sessionId' | 'userId' | 'type' | 'name' | 'session' | 'timestamp'>;

/**
 * The data set as served: the base merged with the events grown so far (growth.ts). With nothing
 * grown every call goes straight to the base, so a data set that never grows costs nothing more.
 */
function withGrowth(
  base: Omit<Dataset, 'grown' | 'grow'>,
  parts: {
    seed: number;
    meanStepMs: number;
    idOfKey(key: number): string;
    event(key: number, ms: number): GrownFields;
  },
): Dataset {
  const growth = createGrowth({
    total: base.total,
    seed: parts.seed,
    meanStepMs: parts.meanStepMs,
    timestampAt: base.timestampAt,
    idOfKey: parts.idOfKey,
    indexAfter: base.indexAfter,
  });
  const total = () => base.total + growth.count;
  const checkIndex = (index: number) => {
    if (!Number.isInteger(index) || index < 0 || index >= total()) {
      throw new RangeError(`index ${index} is outside the data set (0..${total() - 1})`);
    }
  };
  const locate = (index: number) => {
    checkIndex(index);
    return growth.locate(index);
  };
  const grownEvent = (rank: number, index: number): SimEvent => {
    const ms = growth.tsOf(rank);
    const f = parts.event(growth.keyOf(rank), ms);
    return { index, ...f, properties: { page: '/home' }, timestampMs: ms, fault: null };
  };
  const grownJson = (rank: number): string => {
    const ms = growth.tsOf(rank);
    const f = parts.event(growth.keyOf(rank), ms);
    const t = typeof f.timestamp === 'number' ? String(f.timestamp) : `"${f.timestamp}"`;
    return `{"id":"${f.id}","sessionId":"${f.sessionId}","userId":"${f.userId}","type":"${f.type}","name":"${f.name}","properties":{"page":"/home"},"timestamp":${t},"session":{"id":"${f.session.id}","deviceType":"${f.session.deviceType}","browser":"${f.session.browser}"}}`;
  };
  const mergedOfBase = (b: number) => b + growth.countBeforeBase(b);
  return {
    get total() {
      return total();
    },
    get grown() {
      return growth.count;
    },
    seed: base.seed,
    sessionCount: base.sessionCount,
    userCount: base.userCount,
    faultRates: base.faultRates,
    grow: (args) => growth.grow(args),
    eventAt(index) {
      const at = locate(index);
      return 'grown' in at ? grownEvent(at.grown, index) : { ...base.eventAt(at.base), index };
    },
    idAt(index) {
      const at = locate(index);
      return 'grown' in at ? growth.idOf(at.grown) : base.idAt(at.base);
    },
    timestampAt(index) {
      const at = locate(index);
      return 'grown' in at ? growth.tsOf(at.grown) : base.timestampAt(at.base);
    },
    indexAfter: (ts, id) => base.indexAfter(ts, id) + growth.countAtOrAhead(ts, id),
    indexAtOrBefore: (ts) => base.indexAtOrBefore(ts) + growth.countNewerThan(ts),
    indexOfId(id) {
      const b = base.indexOfId(id);
      if (b !== null) return mergedOfBase(b);
      const rank = growth.rankOfId(id);
      return rank === null ? null : growth.mergedOfRank(rank);
    },
    faultFor(index) {
      const at = locate(index);
      return 'grown' in at ? null : base.faultFor(at.base);
    },
    isValid(index) {
      const at = locate(index);
      return 'grown' in at ? true : base.isValid(at.base);
    },
    expectedValidCount: () => base.expectedValidCount() + growth.count,
    rejectedIndices: () => base.rejectedIndices().map(mergedOfBase),
    serialiseEvent(index) {
      const at = locate(index);
      return 'grown' in at ? grownJson(at.grown) : base.serialiseEvent(at.base);
    },
    serialiseRange(start, end) {
      if (growth.count === 0) return base.serialiseRange(start, end);
      if (start >= end) return { json: '', faults: {} };
      checkIndex(start);
      checkIndex(end - 1);
      // Runs of base indices go to the base's fast path; grown events are written one by one.
      const parts: string[] = [];
      const faults: Partial<Record<EventFault['kind'], number>> = {};
      let m = start;
      while (m < end) {
        const at = growth.locate(m);
        if ('grown' in at) {
          parts.push(grownJson(at.grown));
          m++;
          continue;
        }
        // The next grown event after this base index bounds the run.
        const c = growth.grownBefore(m);
        const runEnd = Math.min(end, c < growth.count ? growth.mergedOfRank(c) : total());
        const run = base.serialiseRange(at.base, at.base + (runEnd - m));
        if (run.json !== '') parts.push(run.json);
        for (const [kind, n] of Object.entries(run.faults)) {
          const k = kind as EventFault['kind'];
          faults[k] = (faults[k] ?? 0) + (n ?? 0);
        }
        m = runEnd;
      }
      return { json: parts.join(','), faults };
    },
  };
}

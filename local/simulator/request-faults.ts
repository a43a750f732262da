import { hash3, SALT, unit } from './hash.ts';
import { pageLatencyMs } from './latency.ts';
import type { SimulatorOptions } from './options.ts';
import { TRANSIENT_STATUSES } from './responses.ts';

/*
 * Per-request faults. Each is decided from the seed and the request's sequence number (or, for
 * duplicate rows, the page's start), so a run is reproducible from the seed.
 */

/** Most rows a duplicate-row fault repeats from before the cursor. */
export const MAX_DUPLICATE_ROWS = 25;

export type RequestFaultOptions = Pick<
  SimulatorOptions,
  | 'seed'
  | 'transientErrorRate'
  | 'truncatedBodyRate'
  | 'duplicateRowRate'
  | 'latencyMs'
  | 'latencyJitterMs'
  | 'latencyTailRate'
  | 'latencyTailMs'
> &
  Partial<
    Pick<
      SimulatorOptions,
      | 'backCursorRate'
      | 'sidewaysCursorRate'
      | 'emptyPageRate'
      | 'conflictingDuplicateRate'
      | 'oversizeBodyRate'
      | 'endlessBodyRate'
      | 'hostileErrorRate'
    >
  >;

/** How the page at a cursor position breaks the stream's order (hostile faults), or null. */
export type CursorFault = 'back' | 'sideways' | 'empty' | null;

/** How request `n`'s body misbehaves (hostile faults), or null. */
export type BodyFault = 'oversize' | 'endless' | 'hostileError' | null;

/** Salts of the hostile faults, apart from hash.ts's so that adding them moved no other fault. */
const HOSTILE_SALT = { cursor: 0x6d2b79f5, conflict: 0x2f6b1d93, body: 0x4f1bbcdc } as const;

export interface RequestFaults {
  /** The load balancer's status when request `n` fails transiently, else null. */
  transientStatus(n: number): number | null;
  /** How many rows before `start` the page repeats (0 = none). */
  duplicateRows(start: number): number;
  /** Where request `n`'s body of `length` characters is cut, or null when it is sent whole. */
  truncateAt(n: number, length: number): number | null;
  /** Unscaled milliseconds request `n`, a page of `rows` events, waits before it is answered. */
  latencyMs(n: number, rows: number): number;
  /** The page at cursor position `start` (> 0) points back, sideways, or is empty forever. */
  cursorFault(start: number): CursorFault;
  /** The page at `start` (> 0) repeats ids with other content. */
  conflictingDuplicate(start: number): boolean;
  /** Request `n` gets an oversize or endless body, or a 401 with hostile text. */
  bodyFault(n: number): BodyFault;
}

export function createRequestFaults(options: RequestFaultOptions): RequestFaults {
  const seed = options.seed >>> 0;
  return {
    transientStatus(n) {
      if (
        !(options.transientErrorRate > 0 && unit(hash3(seed, n, SALT.transient)) < options.transientErrorRate)
      )
        return null;
      return TRANSIENT_STATUSES[hash3(seed, n, SALT.transient + 1) % 4]!;
    },
    duplicateRows(start) {
      if (!(options.duplicateRowRate > 0 && start > 0)) return 0;
      if (unit(hash3(seed, start, SALT.duplicate)) >= options.duplicateRowRate) return 0;
      return 1 + (hash3(seed, start, SALT.duplicate + 1) % Math.min(start, MAX_DUPLICATE_ROWS));
    },
    truncateAt(n, length) {
      if (!(options.truncatedBodyRate > 0 && unit(hash3(seed, n, SALT.truncate)) < options.truncatedBodyRate))
        return null;
      const cut = 0.1 + 0.8 * unit(hash3(seed, n, SALT.truncate + 1));
      return Math.floor(length * cut);
    },
    cursorFault(start) {
      if (start <= 0) return null;
      const u = unit(hash3(seed, start, HOSTILE_SALT.cursor));
      const back = options.backCursorRate ?? 0;
      const sideways = options.sidewaysCursorRate ?? 0;
      const empty = options.emptyPageRate ?? 0;
      if (u < back) return 'back';
      if (u < back + sideways) return 'sideways';
      if (u < back + sideways + empty) return 'empty';
      return null;
    },
    conflictingDuplicate(start) {
      const rate = options.conflictingDuplicateRate ?? 0;
      return rate > 0 && start > 0 && unit(hash3(seed, start, HOSTILE_SALT.conflict)) < rate;
    },
    bodyFault(n) {
      const u = unit(hash3(seed, n, HOSTILE_SALT.body));
      const oversize = options.oversizeBodyRate ?? 0;
      const endless = options.endlessBodyRate ?? 0;
      const hostile = options.hostileErrorRate ?? 0;
      if (u < oversize) return 'oversize';
      if (u < oversize + endless) return 'endless';
      if (u < oversize + endless + hostile) return 'hostileError';
      return null;
    },
    latencyMs(n, rows) {
      // The slow tail (family members): this answer takes the tail's latency, no jitter.
      const tail = options.latencyTailRate ?? 0;
      if (tail > 0 && unit(hash3(seed, n, SALT.latency + 1)) < tail)
        return pageLatencyMs(options.latencyTailMs ?? 0, 0, rows, 0);
      return pageLatencyMs(
        options.latencyMs,
        options.latencyJitterMs,
        rows,
        unit(hash3(seed, n, SALT.latency)),
      );
    },
  };
}

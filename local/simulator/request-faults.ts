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
>;

export interface RequestFaults {
  /** The load balancer's status when request `n` fails transiently, else null. */
  transientStatus(n: number): number | null;
  /** How many rows before `start` the page repeats (0 = none). */
  duplicateRows(start: number): number;
  /** Where request `n`'s body of `length` characters is cut, or null when it is sent whole. */
  truncateAt(n: number, length: number): number | null;
  /** Unscaled milliseconds request `n`, a page of `rows` events, waits before it is answered. */
  latencyMs(n: number, rows: number): number;
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

import { MAX_CHAINS } from '../config.ts';
/*
 * Naming of a source's cursor chains. Pure: the step, the state machine's callers and the
 * database layer all agree on these keys without importing the database.
 *
 * Chain 0 is the source's own checkpoint row; chain j >= 1 is the row `<sourceId>~<j>`. `~` is
 * outside the sourceId alphabet (contract.ts sourceIdSchema), so a chain key never collides with
 * a source id.
 */

/** The id of a chain's built start cursor: the service positions by ts (and maybe id), and this id sorts first. */
export const ZERO_ID = '00000000-0000-0000-0000-000000000000';

const SEPARATOR = '~';

/** The checkpoint key of chain `chain` of `sourceId`. */
export function chainKey(sourceId: string, chain: number): string {
  if (!Number.isInteger(chain) || chain < 0) {
    throw new RangeError(`chain must be an integer >= 0, got ${chain}`);
  }
  return chain === 0 ? sourceId : `${sourceId}${SEPARATOR}${chain}`;
}

/**
 * The source and chain a checkpoint key names; null when the key is not one chainKey makes
 * (`a~0`, `a~01`, `a~x`, `~1`).
 */
export function parseChainKey(key: string): { sourceId: string; chain: number } | null {
  const at = key.lastIndexOf(SEPARATOR);
  if (at === -1) return key.length > 0 ? { sourceId: key, chain: 0 } : null;
  const sourceId = key.slice(0, at);
  const digits = key.slice(at + 1);
  if (sourceId.length === 0 || sourceId.includes(SEPARATOR) || !/^[1-9][0-9]*$/.test(digits)) return null;
  const chain = Number(digits);
  return Number.isSafeInteger(chain) ? { sourceId, chain } : null;
}

/** What the first page tells about the data set. */
export interface FirstPage {
  /** Instant of the page's first (newest) and last (oldest) event. */
  newestTs: number;
  oldestOnPageTs: number;
  /** Events on the page. */
  events: number;
  /** meta.total, when the upstream sends it. */
  total: number | null;
  hasMore: boolean;
}

/**
 * How many chains to run. Chains pay off only when one chain cannot keep up with the request
 * rate the limit allows: a chain sends its next request when its previous answer is in, so it
 * sends at most one per latency. The rate allowed is one per max(spacing, window / limit); the
 * chains needed are ceil(latency / interval) + 1 (one more, so that a slot is never left idle
 * while every chain waits for an answer), never more than the window holds requests.
 */
export function chainsWanted(args: {
  requested: 'auto' | number;
  latencyMs: number;
  minSpacingMs: number;
  rateLimit: { limit: number; remaining: number; resetSeconds: number } | null;
}): { chains: number; why: string } {
  const limit = args.rateLimit && args.rateLimit.limit > 0 ? args.rateLimit.limit : MAX_CHAINS;
  const cap = Math.min(MAX_CHAINS, limit);
  if (args.requested !== 'auto') {
    const chains = Math.min(args.requested, cap);
    return {
      chains,
      why:
        chains === args.requested
          ? `${chains} chain(s) requested`
          : `${args.requested} chains requested, ${chains} used: the window allows ${limit} requests`,
    };
  }
  // A fresh window's Reset is the window itself; later in a window it is less, which only
  // makes the interval (and so the chain count) larger: the safe side.
  const windowMs = args.rateLimit ? args.rateLimit.resetSeconds * 1000 : 0;
  const intervalMs = Math.max(args.minSpacingMs, args.rateLimit && limit > 0 ? windowMs / limit : 0, 1);
  if (args.latencyMs <= args.minSpacingMs) {
    return {
      chains: 1,
      why: `one chain: the first page took ${Math.round(args.latencyMs)} ms, within the ${args.minSpacingMs} ms spacing`,
    };
  }
  const chains = Math.min(cap, Math.ceil(args.latencyMs / intervalMs) + 1);
  return {
    chains,
    why: `${chains} chains: the first page took ${Math.round(args.latencyMs)} ms, one request may start every ${Math.round(intervalMs)} ms`,
  };
}

/**
 * The ranges of `chains` chains over the data set the first page describes: equal spans of
 * time between its newest instant and the oldest one extrapolated from the page's span and
 * meta.total. Unevenly spread timestamps are corrected while running (a chain that finishes
 * takes over half of the largest open range). Null when one chain is all there is to do.
 */
export function planRanges(
  first: FirstPage,
  chains: number,
): { oldestTs: number; ranges: { chain: number; hiTs: number | null; loTs: number | null }[] } | null {
  if (chains < 2 || !first.hasMore || first.total === null || first.events < 2) return null;
  const pageSpan = first.newestTs - first.oldestOnPageTs;
  if (pageSpan <= 0 || first.total <= first.events) return null;
  const oldestTs = Math.floor(first.newestTs - (pageSpan * first.total) / first.events);
  const span = first.newestTs - oldestTs;
  const bounds: number[] = [];
  for (let j = 1; j < chains; j++) bounds.push(Math.round(first.newestTs - (span * j) / chains));
  // A boundary inside the first page would make chain 0's range less than a page: fewer chains.
  const usable = bounds.filter((b) => b < first.oldestOnPageTs);
  if (usable.length === 0) return null;
  const ranges = [{ chain: 0, hiTs: null as number | null, loTs: usable[0] ?? null }];
  usable.forEach((hi, i) => {
    ranges.push({ chain: i + 1, hiTs: hi, loTs: usable[i + 1] ?? null });
  });
  return { oldestTs, ranges };
}

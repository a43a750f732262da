import { z } from 'zod';
import { CHAIN_MODES, type Checkpoint, sourceIdSchema } from '../step/contract.ts';
import { byChain, sourceHeader, sourceTotals } from '../step/totals.ts';

/** The status function's input: which source to describe. */
export const statusRequestSchema = z.object({ sourceId: sourceIdSchema.default('default') }).loose();

/** One cursor chain of the source: its range, where it is, what it did. Instants are epoch ms. */
export const chainViewSchema = z.object({
  chain: z.number(),
  /** The range, both ends inclusive: null hi = from page one, null lo = to the end of the data. */
  hi: z.number().nullable(),
  lo: z.number().nullable(),
  /** The instant the chain has read down to (null before its first page). */
  position: z.number().nullable(),
  pages: z.number(),
  inserted: z.number(),
  /** Nothing is left in its range (unless it takes over part of another's). */
  rangeDone: z.boolean(),
  /** An execution holds the chain's lease now. */
  leased: z.boolean(),
});
export type ChainView = z.infer<typeof chainViewSchema>;

/**
 * What the status function returns: the checkpoint's view of a source. Shared by the function and
 * the operator CLI, which validates the Lambda's answer with it before printing.
 */
export const statusViewSchema = z.object({
  sourceId: z.string(),
  eventsInserted: z.number(),
  pages: z.number(),
  rejected: z.number(),
  /** Conflicting duplicates (same id, other content; table event_conflicts). Optional: older status functions omit it. */
  conflicts: z.number().optional(),
  totalReported: z.number().nullable(),
  status: z.string(),
  lastError: z.string().nullable(),
  updatedAtMs: z.number(),
  requests: z.number(),
  rateLimited: z.number(),
  /** The newest rate-limit headers the upstream sent. */
  lastRateLimit: z.object({ limit: z.number(), remaining: z.number(), resetSeconds: z.number() }).nullable(),
  /** When the function will next call the upstream (pacing), epoch ms. */
  nextRequestAtMs: z.number().nullable(),
  leaseOwner: z.string().nullable(),
  leaseExpiresAtMs: z.number().nullable(),
  // Optional so that this CLI still reads a status function deployed before chains existed.
  /** How the source is read: one chain, several, or back to one (null until planned). */
  mode: z.enum(CHAIN_MODES).nullable().optional(),
  /** Why one chain, or why the fallback. */
  note: z.string().nullable().optional(),
  chains: z.array(chainViewSchema).optional(),
  /** Top-ups (optional: a status function deployed before them sends none). Epoch ms. */
  topUp: z
    .object({
      /** Everything at or below it that the upstream held when the last walk started is stored (late arrivals: the lookback's). */
      highWaterMark: z.number().nullable(),
      /** The running top-up's signpost and floor (null when none runs). */
      signpost: z.number().nullable(),
      floor: z.number().nullable(),
      lastTopUpAtMs: z.number().nullable(),
      lastTopUpInserted: z.number().nullable(),
      topUps: z.number(),
      lateBeyondLookback: z.number(),
    })
    .optional(),
});
export type StatusView = z.infer<typeof statusViewSchema>;

export const statusResponseSchema = z.object({ checkpoint: statusViewSchema.nullable() });
export type StatusResponse = z.infer<typeof statusResponseSchema>;

/**
 * The status of a source from its checkpoint rows (the source's own row and its chain rows, as
 * `listChains` reads them): counters summed over the chains, status and lease from the source's
 * row, one entry per chain. Null when the source has no row yet.
 */
export function statusView(rows: readonly Checkpoint[], nowMs: number): StatusView | null {
  const header = sourceHeader(rows);
  if (!header) return null;
  const chains = byChain(rows);
  const totals = sourceTotals(chains);
  // The newest headers and the soonest request of any chain still reading.
  const newest = chains.reduce((a, b) => (b.updatedAtMs > a.updatedAtMs ? b : a), header);
  const withLimit = chains
    .filter((c) => c.lastRateLimit !== null)
    .reduce<Checkpoint | null>((a, b) => (a === null || b.updatedAtMs > a.updatedAtMs ? b : a), null);
  const next = chains
    .filter((c) => !c.rangeDone && c.nextRequestAtMs !== null)
    .map((c) => c.nextRequestAtMs as number);
  return {
    sourceId: header.sourceId,
    eventsInserted: totals.inserted,
    pages: totals.pages,
    rejected: totals.rejected,
    conflicts: chains.reduce((sum, c) => sum + (c.conflicts ?? 0), 0),
    totalReported:
      header.totalReported ?? chains.find((c) => c.totalReported !== null)?.totalReported ?? null,
    status: header.status,
    lastError: header.lastError ?? chains.find((c) => c.lastError !== null)?.lastError ?? null,
    updatedAtMs: newest.updatedAtMs,
    requests: totals.requests,
    rateLimited: totals.rateLimited,
    lastRateLimit: withLimit?.lastRateLimit ?? null,
    nextRequestAtMs: next.length > 0 ? Math.min(...next) : header.nextRequestAtMs,
    leaseOwner: header.leaseOwner,
    leaseExpiresAtMs: header.leaseExpiresAtMs,
    mode: header.chainMode,
    note: header.chainNote,
    topUp: {
      highWaterMark: header.marks?.hwmTs ?? null,
      signpost: header.marks?.signpostTs ?? null,
      floor: header.marks?.floorTs ?? null,
      lastTopUpAtMs: header.marks?.lastTopupAtMs ?? null,
      lastTopUpInserted: header.marks?.lastTopupInserted ?? null,
      topUps: header.marks?.topups ?? 0,
      lateBeyondLookback: chains.reduce((n, c) => n + (c.marks?.lateBeyondLookback ?? 0), 0),
    },
    chains: chains.map((c) => ({
      chain: c.chain,
      hi: c.rangeHiTs,
      lo: c.rangeLoTs,
      position: c.positionTs,
      pages: c.pages,
      inserted: c.eventsInserted,
      rangeDone: c.rangeDone,
      leased: c.leaseOwner !== null && (c.leaseExpiresAtMs === null || c.leaseExpiresAtMs > nowMs),
    })),
  };
}

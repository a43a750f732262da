import { z } from 'zod';
import { MAX_CHAINS, type StepSettings } from '../config.ts';
import type { RateLimitInfo } from '../errors.ts';
import type { FetchPageResult, NormalisedEvent, RejectedEvent } from '../upstream/types.ts';

/*
 * The step's contract: what goes in and out of one invocation, and the ports it drives. The
 * database layer, the upstream client and the handler implement these; the algorithm
 * (page.ts, plan.ts, recovery.ts) depends on nothing else, so tests can put a fault at any seam.
 */

/** Source ids end up in logs, metrics and execution names: keep them to a safe alphabet. */
export const sourceIdSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, {
  error:
    'sourceId must be 1-64 characters of letters, digits, ".", "_" or "-", starting with a letter or digit',
});

/**
 * The execution's state as the state machine passes it: the execution input on the first
 * iteration (`{sourceId?, parentExecutionId?}`), the previous step's output afterwards.
 */
const stateSchema = z
  .object({
    sourceId: sourceIdSchema.default('default'),
    parentExecutionId: z.string().min(1).nullish(),
    iteration: z.number().int().nonnegative().default(0),
    /** The cursor chain this iteration drives (0: the source's own row). */
    chain: z
      .number()
      .int()
      .min(0)
      .max(MAX_CHAINS - 1)
      .default(0),
    /** Plan rounds done in this execution (the state machine continues as new after one). */
    round: z.number().int().nonnegative().default(0),
    /** Set by Plan on each Map item: the chain's iterations before it pauses. */
    perChainCap: z.number().int().positive().optional(),
    /**
     * What a start does when another execution is reading the source: `fail` (LeaseHeldError, the
     * default for a start by hand) or `skip` (the scheduled start: it ends quietly, succeeded).
     */
    ifRunning: z.enum(['fail', 'skip']).optional(),
  })
  .loose();

/**
 * The step's input. The state machine sends `{executionId, state: $}`; a person invoking the
 * function by hand may send the flat `{executionId, sourceId?}` the issue describes.
 */
export const stepInputSchema = z.preprocess(
  (raw) => {
    if (raw && typeof raw === 'object' && !('state' in raw)) {
      const { executionId, action, ...state } = raw as Record<string, unknown>;
      return { executionId, action, state };
    }
    return raw;
  },
  z.object({
    executionId: z
      .string({ error: 'executionId is required (the state machine passes $$.Execution.Id)' })
      .min(1),
    /** `plan`: the Plan task (which chains to run); absent: one page of `state.chain`. */
    action: z.enum(['plan', 'page']).default('page'),
    state: stateSchema.default({ sourceId: 'default', iteration: 0, chain: 0, round: 0 }),
  }),
);
export type StepInput = z.infer<typeof stepInputSchema>;
/** A parsed input the front door (index.ts) routes to the Plan task. */
export type PlanInput = StepInput & { action: 'plan' };
/** A parsed input the front door routes to one page of `state.chain`. */
export type PageInput = StepInput & { action: 'page' };

/** What the step knows about the invocation running it. */
export interface StepInvocation {
  /**
   * When the function will be stopped (epoch ms on the step's clock): the handler passes
   * `now + context.getRemainingTimeInMillis()`. No request runs past it minus the write's
   * headroom. @default no deadline
   */
  deadlineMs?: number;
}

const count = z.number().int().nonnegative();

/**
 * The counters of a source, a chain or a run, under one set of names everywhere inside the
 * code. The documented outputs keep their own field names at their boundary: the status view's
 * `eventsInserted` and the local run's summary `duplicatesSkipped` are `inserted` and
 * `duplicates` here.
 */
export const totalsSchema = z.object({
  pages: count,
  inserted: count,
  duplicates: count,
  rejected: count,
  requests: count,
  rateLimited: count,
});
export type Totals = z.infer<typeof totalsSchema>;

/** What the step's outputs carry of a row's totals (the state machine passes them on). */
export const stepTotalsSchema = totalsSchema.pick({
  pages: true,
  inserted: true,
  duplicates: true,
  rejected: true,
});
export type StepTotals = z.infer<typeof stepTotalsSchema>;

/** One page's counters: what the upstream sent and what became of it. */
const pageCountsSchema = z.object({ received: count, inserted: count, duplicates: count, rejected: count });

export const stepOutputSchema = z.object({
  sourceId: z.string(),
  chain: z.number().int().nonnegative(),
  done: z.boolean(),
  /** Whole seconds for the Wait state's SecondsPath. */
  waitSeconds: z.number().int().nonnegative(),
  nextCursor: z.string().nullable(),
  page: pageCountsSchema,
  totals: stepTotalsSchema,
  /** Invocations within this execution (the state machine continues as new past a threshold). */
  iteration: z.number().int().positive(),
  /** Why this invocation did not advance, when it did not. */
  skipped: z.enum(['rate-limited', 'not-yet-due']).optional(),
  /** Invocations of this chain before its Map iteration pauses (the execution then continues as new). */
  perChainCap: z.number().int().positive().optional(),
  parentExecutionId: z.string().min(1).nullish(),
});
export type StepOutput = z.infer<typeof stepOutputSchema>;

export const CHAIN_MODES = ['single', 'chains', 'fallback'] as const;
export type ChainMode = (typeof CHAIN_MODES)[number];

/** One Map item: the state a chain's first FetchPage starts from. */
export const chainItemSchema = z.object({
  sourceId: z.string(),
  chain: z.number().int().nonnegative(),
  iteration: z.literal(0),
  perChainCap: z.number().int().positive(),
  parentExecutionId: z.string().min(1).nullish(),
});
export type ChainItem = z.infer<typeof chainItemSchema>;

/** The Plan task's output: done, or the chains for the Map to run. */
export const planOutputSchema = z.object({
  sourceId: z.string(),
  done: z.boolean(),
  round: z.number().int().nonnegative(),
  mode: z.enum(CHAIN_MODES),
  chains: z.array(chainItemSchema),
  parentExecutionId: z.string().min(1).nullish(),
  totals: stepTotalsSchema,
  /** The start found the source being read by another execution and ended quietly (ifRunning: skip). */
  skipped: z.literal('already-running').optional(),
});
export type PlanOutput = z.infer<typeof planOutputSchema>;

/** One source's resumable state as the step sees it: instants as epoch ms, counters as numbers. */
export interface Checkpoint {
  sourceId: string;
  cursor: string | null;
  positionTs: number | null;
  positionId: string | null;
  pages: number;
  eventsInserted: number;
  duplicatesSkipped: number;
  rejected: number;
  requests: number;
  rateLimited: number;
  totalReported: number | null;
  nextRequestAtMs: number | null;
  lastRateLimit: RateLimitInfo | null;
  status: 'running' | 'complete' | 'failed';
  lastError: string | null;
  leaseOwner: string | null;
  leaseExpiresAtMs: number | null;
  version: number;
  createdAtMs: number;
  updatedAtMs: number;
  completedAtMs: number | null;
  /** The source this chain row belongs to; null on the source's own row (chain 0). */
  chainOf: string | null;
  chain: number;
  /** The chain's range, both ends inclusive: null hi = from page one, null lo = to the end of the data. */
  rangeHiTs: number | null;
  rangeLoTs: number | null;
  /** The chain has nothing left in its range right now. */
  rangeDone: boolean;
  /** Source row only: null until planned. */
  chainMode: ChainMode | null;
  chainNote: string | null;
  chainsPlanned: number;
  /** Source row only: the plan's estimate of the oldest instant (the low end of a range whose lo is null). */
  planOldestTs: number | null;
  /** Pages in a row up to this position that came back empty with hasMore (shared/step/position.ts). Absent: 0. */
  emptyPagesInARow?: number;
  /** Conflicting duplicates this row met (same id, other content; table event_conflicts). Absent: 0. */
  conflicts?: number;
  /** The top-up marks (shared/step/topup.ts). The database always fills them; fakes may leave them out. */
  marks?: CheckpointMarks;
}

/** What a newest-first top-up keeps (epoch ms; null = not set). */
export interface CheckpointMarks {
  /** Source row: the high-water mark, null until the first top-up sets it. */
  hwmTs: number | null;
  hwmId: string | null;
  /** Source row, while a top-up runs: the newest position it saw; the next mark when the walk ends. */
  signpostTs: number | null;
  signpostId: string | null;
  /** Every row of a running top-up: mark less the lookback. A range whose low end is at or below it ends the walk. */
  floorTs: number | null;
  topupStartedAtMs: number | null;
  /** Source row: the source's inserted count when the running top-up began. */
  baseInserted: number | null;
  lastTopupAtMs: number | null;
  /** Source row: rows the last completed top-up stored. */
  lastTopupInserted: number | null;
  /** Source row: completed top-ups. */
  topups: number;
  /** Rows a top-up stored below its floor (late beyond the lookback), this row's. */
  lateBeyondLookback: number;
}

/** What a top-up's Plan records in one transaction (shared/db/topup.ts). */
export interface BeginTopUpArgs {
  sourceId: string;
  owner: string;
  /** The version read when the lease was taken: a retried Plan that lost the race cannot plan twice. */
  expectedVersion: number;
  /** The mark the walk goes down to (less the lookback); null: none known, the walk goes to the end. */
  mark: { ts: number; id: string | null } | null;
  signpost: { ts: number; id: string };
  floorTs: number | null;
  /** The source's chain mode during the walk: 'chains' for a gap planned as chains, else unchanged. */
  mode: ChainMode;
  note: string | null;
  /** Chain 0 first (hiTs null); the last one ends at floorTs. */
  ranges: PlannedRange[];
}

/** One range of a plan: chain 0 has hiTs null, the last chain loTs null. Epoch ms. */
export interface PlannedRange {
  chain: number;
  hiTs: number | null;
  loTs: number | null;
}

export interface CreatePlanArgs {
  sourceId: string;
  owner: string;
  mode: ChainMode;
  note: string | null;
  oldestTs: number | null;
  ranges: PlannedRange[];
  /**
   * The Plan task's own request for page one: counted on the source row, and the earliest next
   * request and its headers kept there, so that a one-chain source keeps the spacing after it.
   * `requests`: every request the Plan sent for it, retries and 429s included (default 1).
   */
  planRequest?: { nextRequestAtMs: number; rateLimit: RateLimitInfo | null; requests?: number };
}

export interface FinishRangeArgs {
  sourceId: string;
  chain: number;
  owner: string;
  /** A chain takes over part of another only if at least this much of it is left. */
  minSplitMs: number;
  /**
   * When given, the chain row must still be at this version (else CheckpointConflictError), so
   * a finishRange repeated after one that already moved this chain to a new range cannot end
   * the new range unread.
   */
  expectedVersion?: number;
}

export interface FinishRangeResult {
  /** The range this chain now reads (it starts from a built cursor at hiTs), or null: the chain ends. */
  takeover: { hiTs: number; loTs: number | null } | null;
  sourceComplete: boolean;
  /** The source row then its chain rows, by chain, as committed. */
  chains: Checkpoint[];
}

/** One page and the checkpoint it moves to, committed together or not at all. */
export interface PersistPageInput {
  /** The checkpoint row: the source's own, or a chain's (`chainKey`). */
  sourceId: string;
  expectedVersion: number;
  owner: string;
  events: NormalisedEvent[];
  rejects: RejectedEvent[];
  /** The cursor the page was requested with (null for the first page): kept with each reject. */
  pageCursor: string | null;
  next: {
    cursor: string | null;
    positionTs: number | null;
    positionId: string | null;
    hasMore: boolean;
    nextRequestAtMs: number;
    rateLimit: RateLimitInfo | null;
    totalReported: number | null;
    /**
     * The chain reached the low end of its range with this page: range_done is set in the same
     * commit. A chain row (or the source row of a planned multi-chain source) whose page has
     * hasMore false is range-done too, and stays running: finishRange completes the source.
     */
    rangeDone?: boolean;
    /** The page was empty and said hasMore: the row's count of such pages in a row goes up, else back to 0. */
    emptyPage?: boolean;
    /** Rows of this page below a top-up's floor that were not stored before it: counted with the page. */
    lateBeyondLookback?: number;
  };
  requestsMade: number;
  rateLimitedSeen: number;
  /**
   * The source_id written on events and rejected_events: the real source when a chain row
   * (`<sourceId>~<j>`) persists. Default: sourceId.
   */
  eventsSourceId?: string;
}

export interface PersistPageResult {
  inserted: number;
  duplicates: number;
  rejectsInserted: number;
  version: number;
  checkpoint: Checkpoint;
  /**
   * How the events were written: `copy` (binary COPY of the page's distinct new ids, the fast
   * path) or `insert` (INSERT ... ON CONFLICT DO NOTHING, used when the COPY was refused, e.g.
   * because some ids were already stored) or `none` (no valid event in the page).
   */
  writePath: 'copy' | 'insert' | 'none';
  /** Duplicates of this page whose content differs from the stored copy (recorded in event_conflicts). */
  conflicts?: number;
  /** Rows PostgreSQL refused, stored as rejects with its reason (counted in rejectsInserted). */
  refused?: number;
}

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export interface StepLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface StepMetrics {
  /** Unit is a CloudWatch unit name ("Count", "Milliseconds"). */
  add(name: string, unit: 'Count' | 'Milliseconds', value: number): void;
}

/** What the step needs from the database layer: narrow, so tests can inject faults at each seam. */
export interface StepStore {
  acquireLease(args: {
    sourceId: string;
    owner: string;
    nowMs: number;
    ttlMs: number;
    handoverFrom?: string | null;
  }): Promise<Checkpoint>;
  recordRateLimited(args: {
    sourceId: string;
    expectedVersion: number;
    nextRequestAtMs: number;
    rateLimit: RateLimitInfo | null;
    requestsMade: number;
  }): Promise<Checkpoint>;
  /**
   * Counts requests that stored nothing and drew no 429 (failed answers before a slot that was
   * not due, a refused built cursor, a page whose commit lost the version race) on the row,
   * without bumping its version: a counter only, so no chain's commit is disturbed. Optional:
   * a store without it leaves them uncounted.
   */
  addRequests?(args: { sourceId: string; requests: number }): Promise<void>;
  persistPage(args: PersistPageInput): Promise<PersistPageResult>;
  releaseLease(args: { sourceId: string; owner: string }): Promise<void>;
  recordFailure(args: { sourceId: string; error: string }): Promise<void>;
  /** The source row then its chain rows, by chain. */
  listChains(sourceId: string): Promise<Checkpoint[]>;
  createPlan(args: CreatePlanArgs): Promise<Checkpoint[]>;
  finishRange(args: FinishRangeArgs): Promise<FinishRangeResult>;
  fallbackToOneChain(args: { sourceId: string; owner: string; reason: string }): Promise<Checkpoint[]>;
  renewSourceLease(args: {
    sourceId: string;
    owner: string;
    nowMs: number;
    ttlMs: number;
  }): Promise<Checkpoint>;
  /** The shared pacer of one upstream: absent in stores that pace nothing (tests of the step alone). */
  pacer?: SharedPacerPort;
  /** Top-ups (shared/db/topup.ts); a store without them completes a source for good. */
  topUp?: TopUpStorePort;
}

/** What a top-up needs of the database. */
export interface TopUpStorePort {
  /** The newest stored event of the source (the mark of a source completed before top-ups existed). */
  newestStored(sourceId: string): Promise<{ ts: number; id: string } | null>;
  /** Which of these ids the source has stored. */
  storedIds(args: { sourceId: string; ids: string[] }): Promise<Set<string>>;
  /** Reopens a complete source for a top-up: marks, floor, ranges; the source row version-checked. */
  beginTopUp(args: BeginTopUpArgs): Promise<Checkpoint[]>;
}

/** Every request of every chain reserves its start here (shared/db/pacer.ts). */
export interface SharedPacerPort {
  reserve(args: {
    nowMs: number;
    minSpacingMs: number;
    maxAheadMs: number;
    safetyMarginMs: number;
    /** The request may go out this much after its instant; the next one is spaced from that. */
    lateToleranceMs?: number;
    /** The longest window the upstream may have. */
    longestWindowMs?: number;
  }): Promise<{ startAtMs: number; reserved: boolean; reason: string }>;
  answered(args: {
    requestStartMs: number;
    /** The reservation's startAtMs. */
    reservedStartMs: number;
    answerAtMs: number;
    rateLimit: RateLimitInfo | null;
    retryAfterSeconds?: number | null;
    /** The jitter draw in [0, 1) for a 429's backoff. */
    jitter?: number;
    /** The unit Reset is rounded to (config.resetGranularityMs). */
    resetGranularityMs?: number;
    /** config.longestWindowMs: a 429's backoff grows to twice that. */
    longestWindowMs?: number;
  }): Promise<void>;
  /** A reservation that will not be sent. */
  release(args: { startAtMs: number }): Promise<void>;
}

export interface UpstreamClient {
  /** `timeoutMs` bounds this request below the client's own timeout (the invocation's time left). */
  fetchEvents(params: {
    limit: number;
    cursor?: string | null;
    timeoutMs?: number;
  }): Promise<FetchPageResult>;
}

/**
 * The step's settings, resolved: the handler passes the config it parsed (shared/config.ts
 * applied the defaults), tests spread `configDefaults` under their own.
 */
export type StepConfig = StepSettings & {
  /** Random source for backoff jitter; injectable for deterministic tests. */
  random?: () => number;
};

export interface StepDeps {
  store: StepStore;
  upstream: UpstreamClient;
  clock: Clock;
  logger: StepLogger;
  metrics: StepMetrics;
  config: StepConfig;
}

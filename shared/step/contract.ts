import { z } from 'zod';
import type { StepSettings } from '../config.ts';
import type { RateLimitInfo } from '../errors.ts';
import type { FetchPageResult, NormalisedEvent, RejectedEvent } from '../upstream/types.ts';

/*
 * The step's contract: what goes in and out of one invocation, and the ports it drives. The
 * database layer, the upstream client and the handler implement these; the algorithm
 * (run.ts, recovery.ts) depends on nothing else, so tests can put a fault at any seam.
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
  })
  .loose();

/**
 * The step's input. The state machine sends `{executionId, state: $}`; a person invoking the
 * function by hand may send the flat `{executionId, sourceId?}` the issue describes.
 */
export const stepInputSchema = z.preprocess(
  (raw) => {
    if (raw && typeof raw === 'object' && !('state' in raw)) {
      const { executionId, ...state } = raw as Record<string, unknown>;
      return { executionId, state };
    }
    return raw;
  },
  z.object({
    executionId: z
      .string({ error: 'executionId is required (the state machine passes $$.Execution.Id)' })
      .min(1),
    state: stateSchema.default({ sourceId: 'default', iteration: 0 }),
  }),
);
export type StepInput = z.infer<typeof stepInputSchema>;

const countsSchema = z.object({
  received: z.number().int().nonnegative(),
  inserted: z.number().int().nonnegative(),
  duplicates: z.number().int().nonnegative(),
  rejected: z.number().int().nonnegative(),
});

export const stepOutputSchema = z.object({
  sourceId: z.string(),
  done: z.boolean(),
  /** Whole seconds for the Wait state's SecondsPath. */
  waitSeconds: z.number().int().nonnegative(),
  nextCursor: z.string().nullable(),
  page: countsSchema,
  totals: z.object({
    pages: z.number().int().nonnegative(),
    inserted: z.number().int().nonnegative(),
    duplicates: z.number().int().nonnegative(),
    rejected: z.number().int().nonnegative(),
  }),
  /** Invocations within this execution (the state machine continues as new past a threshold). */
  iteration: z.number().int().positive(),
  /** Why this invocation did not advance, when it did not. */
  skipped: z.enum(['rate-limited', 'not-yet-due']).optional(),
});
export type StepOutput = z.infer<typeof stepOutputSchema>;

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
  /** The chain's range of instants, both ends inclusive: null hi = from page one, null lo = to the end. */
  rangeHiTs: number | null;
  rangeLoTs: number | null;
  /** The chain has nothing left in its range right now. */
  rangeDone: boolean;
  /** Source row only: how the source is read (null until planned), and why. */
  chainMode: 'single' | 'chains' | 'fallback' | null;
  chainNote: string | null;
  chainsPlanned: number;
  /** Source row only: the plan's estimate of the oldest instant. */
  planOldestTs: number | null;
}

/** One page and the checkpoint it moves to, committed together or not at all. */
export interface PersistPageInput {
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
  };
  requestsMade: number;
  rateLimitedSeen: number;
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
  persistPage(args: PersistPageInput): Promise<PersistPageResult>;
  releaseLease(args: { sourceId: string; owner: string }): Promise<void>;
  recordFailure(args: { sourceId: string; error: string }): Promise<void>;
}

export interface UpstreamClient {
  /** `timeoutMs` bounds this request below the client's own timeout (the invocation's time left). */
  fetchEvents(params: {
    limit: number;
    cursor?: string | null;
    timeoutMs?: number;
  }): Promise<FetchPageResult>;
}

/** The step's settings: any not given takes its default from shared/config.ts. */
export type StepConfigInput = Partial<StepSettings> & {
  /** Random source for backoff jitter; injectable for deterministic tests. */
  random?: () => number;
};
export type StepConfig = StepSettings & { random?: () => number };

export interface StepDeps {
  store: StepStore;
  upstream: UpstreamClient;
  clock: Clock;
  logger: StepLogger;
  metrics: StepMetrics;
  config: StepConfigInput;
}

import { z } from 'zod';
import { cursorExpiresWithin, cursorFromPosition, decodeCursor, refreshCursor } from './cursor.ts';
import type { Checkpoint } from './db/checkpoints.ts';
import type { PersistPageInput, PersistPageResult } from './db/persist.ts';
import {
  AuthError,
  CursorExpiredError,
  CursorInvalidError,
  CursorRejectedError,
  DataSyncError,
  RateLimitedError,
  type RateLimitInfo,
  UpstreamProtocolError,
  UpstreamUnavailableError,
} from './errors.ts';
import { planNextRequest, waitSecondsFor } from './pacing.ts';
import { normalisePage } from './upstream/normalise.ts';
import type { FetchPageResult, NormalisedEvent } from './upstream/types.ts';

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
  fetchEvents(params: { limit: number; cursor?: string | null }): Promise<FetchPageResult>;
}

export interface StepDeps {
  store: StepStore;
  upstream: UpstreamClient;
  clock: Clock;
  logger: StepLogger;
  metrics: StepMetrics;
  config: {
    pageSize: number;
    minSpacingMs: number;
    retryBudgetMs: number;
    maxInTaskSleepMs: number;
    leaseTtlMs: number;
    /** Added to header-derived waits (Reset, Retry-After). @default DEFAULT_SAFETY_MARGIN_MS (250) */
    safetyMarginMs?: number;
    /** Refresh a cursor that expires within this margin (the request itself takes seconds). */
    cursorRefreshMarginMs?: number;
    /** Cursor lifetime used when refreshing or rebuilding (the service gives about 116 s). */
    cursorTtlMs?: number;
    /** Random source for backoff jitter; injectable for deterministic tests. */
    random?: () => number;
  };
}

type CursorStage = 'stored' | 'refreshed' | 'rebuilt';

/**
 * Moves one source forward by exactly one page. Any invocation may die at any instant: the
 * page's rows and the checkpoint are committed in one transaction, so a retry either sees the
 * old checkpoint (and fetches the same page again, inserting nothing twice) or the new one.
 */
export async function runStep(deps: StepDeps, rawInput: unknown): Promise<StepOutput> {
  const input = stepInputSchema.parse(rawInput);
  const { store, clock, logger, metrics, config } = deps;
  const { sourceId } = input.state;
  const owner = input.executionId;
  const iteration = input.state.iteration + 1;

  let cp = await store.acquireLease({
    sourceId,
    owner,
    nowMs: clock.now(),
    ttlMs: config.leaseTtlMs,
    handoverFrom: input.state.parentExecutionId ?? null,
  });

  if (cp.status === 'complete') {
    await store.releaseLease({ sourceId, owner });
    logger.info('source already complete', { sourceId, totals: totalsOf(cp) });
    return output(cp, { done: true, waitSeconds: 0, iteration, page: emptyPage() });
  }

  // The Wait state can only wait whole seconds: finish the sub-second remainder here, but never
  // sit in a billed function for long; send a long remainder back to the Wait state instead.
  const due = cp.nextRequestAtMs ?? 0;
  const early = due - clock.now();
  if (early > config.maxInTaskSleepMs) {
    const { waitSeconds } = waitSecondsFor(due, clock.now());
    return output(cp, {
      done: false,
      waitSeconds: Math.max(1, waitSeconds),
      iteration,
      page: emptyPage(),
      skipped: 'not-yet-due',
    });
  }
  if (early > 0) await clock.sleep(early);

  try {
    const fetched = await fetchWithRecovery(deps, cp);
    if (fetched.kind === 'rate-limited') {
      cp = await store.recordRateLimited({
        sourceId,
        expectedVersion: cp.version,
        nextRequestAtMs: fetched.notBeforeMs,
        rateLimit: fetched.error.rateLimit ?? null,
        requestsMade: fetched.requests,
      });
      metrics.add('RateLimited', 'Count', 1);
      const { waitSeconds } = waitSecondsFor(fetched.notBeforeMs, clock.now());
      logger.warn('rate limited: not advancing', {
        sourceId,
        retryAfterSeconds: fetched.error.retryAfterSeconds,
        rateLimit: fetched.error.rateLimit,
        waitSeconds,
      });
      return output(cp, { done: false, waitSeconds, iteration, page: emptyPage(), skipped: 'rate-limited' });
    }

    const { result, cursorUsed, requests } = fetched;
    const { page } = result;
    const { events, rejects } = normalisePage(page.data, { invalidUtf8: page.invalidUtf8 === true });
    const next = nextPosition(cp, page.hasMore, page.nextCursor, events, sourceId);

    const responseAtMs = result.startedAtMs + result.latencyMs;
    const plan = planNextRequest({
      lastRequestStartMs: result.startedAtMs,
      responseAtMs,
      minSpacingMs: config.minSpacingMs,
      rateLimit: result.rateLimit,
      safetyMarginMs: config.safetyMarginMs,
    });

    const persistStarted = clock.now();
    const persisted = await store.persistPage({
      sourceId,
      expectedVersion: cp.version,
      owner,
      events,
      rejects,
      pageCursor: cursorUsed,
      next: {
        cursor: page.hasMore ? page.nextCursor : null,
        positionTs: next.ts,
        positionId: next.id,
        hasMore: page.hasMore,
        nextRequestAtMs: plan.notBeforeMs,
        rateLimit: result.rateLimit,
        totalReported: page.total,
      },
      requestsMade: requests,
      rateLimitedSeen: 0,
    });
    const persistMs = clock.now() - persistStarted;
    cp = persisted.checkpoint;

    const pageCounts = {
      received: page.data.length,
      inserted: persisted.inserted,
      duplicates: persisted.duplicates,
      rejected: rejects.length,
    };
    metrics.add('Pages', 'Count', 1);
    metrics.add('EventsInserted', 'Count', persisted.inserted);
    metrics.add('DuplicatesSkipped', 'Count', persisted.duplicates);
    metrics.add('EventsRejected', 'Count', rejects.length);
    metrics.add('UpstreamLatencyMs', 'Milliseconds', result.latencyMs);
    metrics.add('PersistMs', 'Milliseconds', persistMs);

    // The last page's commit released the lease too (persistPage).
    const done = !page.hasMore;
    const { waitSeconds } = waitSecondsFor(plan.notBeforeMs, clock.now());
    logger.info(done ? 'source complete' : 'page stored', {
      sourceId,
      page: pageCounts,
      totals: totalsOf(cp),
      requestId: result.requestId,
      rateLimit: result.rateLimit,
      upstreamLatencyMs: result.latencyMs,
      persistMs,
      writePath: persisted.writePath,
      waitSeconds,
      pacing: plan.reason,
    });
    return output(cp, { done, waitSeconds: done ? 0 : waitSeconds, iteration, page: pageCounts });
  } catch (error) {
    if (error instanceof DataSyncError && !error.transient) {
      // A fatal error ends this execution: leave a trace for `ingest status` and free the
      // source at once, so the operator's fix-and-restart is not blocked by our lease.
      await store
        .recordFailure({ sourceId, error: `${error.name}: ${error.message}` })
        .catch(() => undefined);
      await store.releaseLease({ sourceId, owner }).catch(() => undefined);
    }
    throw error;
  }
}

type Fetched =
  | { kind: 'page'; result: FetchPageResult; cursorUsed: string | null; requests: number }
  | { kind: 'rate-limited'; error: RateLimitedError; notBeforeMs: number; requests: number };

/**
 * One page, surviving what the upstream does: transient faults are retried with jittered
 * backoff inside a time budget; a refused cursor is refreshed, then rebuilt from the stored
 * position, and only then is the source declared stuck. Never restarts from page one.
 */
async function fetchWithRecovery(deps: StepDeps, cp: Checkpoint): Promise<Fetched> {
  const { upstream, clock, config, logger } = deps;
  const random = config.random ?? Math.random;
  const margin = config.cursorRefreshMarginMs ?? 15_000;
  const ttl = config.cursorTtlMs ?? 116_000;
  const deadline = clock.now() + config.retryBudgetMs;

  let stage: CursorStage = 'stored';
  let cursor = cp.cursor;
  if (cursor && cursorExpiresWithin(cursor, clock.now(), margin)) {
    cursor = refreshOrRebuild(cp, cursor, clock.now(), ttl);
    stage = 'refreshed';
    logger.info('cursor expired or about to: refreshed before the request', { sourceId: cp.sourceId });
  }

  let requests = 0;
  let attempt = 0;
  for (;;) {
    attempt++;
    requests++;
    try {
      const result = await upstream.fetchEvents({ limit: config.pageSize, cursor });
      return { kind: 'page', result, cursorUsed: cursor, requests };
    } catch (error) {
      if (error instanceof RateLimitedError) {
        const now = clock.now();
        const plan = planNextRequest({
          lastRequestStartMs: now,
          responseAtMs: now,
          minSpacingMs: config.minSpacingMs,
          rateLimit: error.rateLimit ?? null,
          retryAfterSeconds: error.retryAfterSeconds,
          safetyMarginMs: config.safetyMarginMs,
        });
        return { kind: 'rate-limited', error, notBeforeMs: plan.notBeforeMs, requests };
      }
      if (error instanceof AuthError) throw error;

      const sent = cursor;
      const cursorRefused =
        sent !== null &&
        (error instanceof CursorExpiredError ||
          error instanceof CursorInvalidError ||
          (error instanceof UpstreamUnavailableError && error.status === 502));
      if (cursorRefused) {
        const nextStage = advanceStage(stage);
        if (nextStage === null) {
          if (error instanceof UpstreamUnavailableError) throw error; // a 502 that persists is an outage, not a verdict on the cursor
          throw new CursorRejectedError(
            `Source "${cp.sourceId}": the upstream refused the stored cursor, a refreshed one and one rebuilt from the ` +
              `stored position (ts=${cp.positionTs} ${cp.positionTs !== null ? new Date(cp.positionTs).toISOString() : ''}, id=${cp.positionId}): ` +
              `${error instanceof Error ? error.message : String(error)}. Nothing was lost; the checkpoint still points at that position. ` +
              `Ask the API provider why the cursor is refused, then start the execution again to resume from it.`,
          );
        }
        logger.warn('cursor refused, trying the next recovery', {
          sourceId: cp.sourceId,
          stage: nextStage,
          error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
        });
        stage = nextStage;
        cursor =
          nextStage === 'refreshed'
            ? refreshOrRebuild(cp, sent, clock.now(), ttl)
            : rebuild(cp, clock.now(), ttl, error);
        continue;
      }

      if (error instanceof UpstreamUnavailableError) {
        // Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter").
        const backoff = Math.floor(random() * Math.min(8_000, 250 * 2 ** attempt));
        if (clock.now() + backoff >= deadline) throw error;
        logger.warn('transient upstream fault, retrying', {
          sourceId: cp.sourceId,
          attempt,
          backoffMs: backoff,
          status: error.status,
          error: error.message,
        });
        await clock.sleep(backoff);
        continue;
      }
      throw error;
    }
  }
}

function advanceStage(stage: CursorStage): CursorStage | null {
  return stage === 'stored' ? 'refreshed' : stage === 'refreshed' ? 'rebuilt' : null;
}

function refreshOrRebuild(cp: Checkpoint, cursor: string, nowMs: number, ttlMs: number): string {
  try {
    return refreshCursor(cursor, nowMs, ttlMs);
  } catch {
    return rebuild(cp, nowMs, ttlMs, undefined);
  }
}

function rebuild(cp: Checkpoint, nowMs: number, ttlMs: number, cause: unknown): string {
  if (cp.positionTs === null || cp.positionId === null) {
    throw new CursorRejectedError(
      `Source "${cp.sourceId}": the stored cursor was refused and the checkpoint holds no position to rebuild it from` +
        (cause instanceof Error ? ` (${cause.message})` : '') +
        '. Inspect the checkpoints row; reset the source only if re-ingesting from page one is acceptable.',
    );
  }
  return cursorFromPosition({ ts: cp.positionTs, id: cp.positionId }, nowMs, ttlMs);
}

/**
 * The position after this page. The server's cursor is authoritative (its (ts, id) is where the
 * next page starts); a page that would not move the position forward is refused, since
 * following it would loop forever.
 */
function nextPosition(
  cp: Checkpoint,
  hasMore: boolean,
  nextCursor: string | null,
  events: NormalisedEvent[],
  sourceId: string,
): { ts: number | null; id: string | null } {
  if (hasMore) {
    if (!nextCursor) {
      throw new UpstreamProtocolError(
        `Source "${sourceId}": the upstream said hasMore=true but sent no nextCursor, so there is no way to ask for the next page. ` +
          'Nothing was stored for this page; start the execution again later, and report it to the API provider if it persists.',
      );
    }
    let decoded: { ts: number; id: string };
    try {
      decoded = decodeCursor(nextCursor);
    } catch (error) {
      throw new UpstreamProtocolError(
        `Source "${sourceId}": the upstream's nextCursor does not decode (${(error as Error).message}). Nothing was stored for this page.`,
      );
    }
    if (cp.positionTs !== null && decoded.ts === cp.positionTs && decoded.id === cp.positionId) {
      throw new UpstreamProtocolError(
        `Source "${sourceId}": the upstream returned a nextCursor at the same position as the request (ts=${decoded.ts}, id=${decoded.id}); ` +
          'following it would fetch the same page forever. Nothing was stored for this page; report it to the API provider.',
      );
    }
    return { ts: decoded.ts, id: decoded.id };
  }
  const last = events.at(-1);
  return last ? { ts: last.occurredAtMs, id: last.id } : { ts: cp.positionTs, id: cp.positionId };
}

function emptyPage() {
  return { received: 0, inserted: 0, duplicates: 0, rejected: 0 };
}

function totalsOf(cp: Checkpoint) {
  return {
    pages: cp.pages,
    inserted: cp.eventsInserted,
    duplicates: cp.duplicatesSkipped,
    rejected: cp.rejected,
  };
}

function output(
  cp: Checkpoint,
  o: {
    done: boolean;
    waitSeconds: number;
    iteration: number;
    page: StepOutput['page'];
    skipped?: StepOutput['skipped'];
  },
): StepOutput {
  return stepOutputSchema.parse({
    sourceId: cp.sourceId,
    done: o.done,
    waitSeconds: o.waitSeconds,
    nextCursor: cp.cursor,
    page: o.page,
    totals: totalsOf(cp),
    iteration: o.iteration,
    ...(o.skipped ? { skipped: o.skipped } : {}),
  });
}

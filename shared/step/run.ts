import { configDefaults } from '../config.ts';
import { decodeCursor } from '../cursor.ts';
import { DataSyncError, UpstreamProtocolError } from '../errors.ts';
import { planNextRequest, waitSecondsFor } from '../pacing.ts';
import { normalisePage } from '../upstream/normalise.ts';
import type { NormalisedEvent } from '../upstream/types.ts';
import {
  type Checkpoint,
  type StepConfig,
  type StepDeps,
  type StepOutput,
  stepInputSchema,
  stepOutputSchema,
} from './contract.ts';
import { fetchWithRecovery, RequestPacer } from './recovery.ts';

/** What the step knows about the invocation running it. */
export interface StepInvocation {
  /**
   * When the function will be stopped (epoch ms on the step's clock): the handler passes
   * `now + context.getRemainingTimeInMillis()`. No request runs past it minus the write's
   * headroom. @default no deadline
   */
  deadlineMs?: number;
}

/**
 * Moves one source forward by exactly one page. Any invocation may die at any instant: the
 * page's rows and the checkpoint are committed in one transaction, so a retry either sees the
 * old checkpoint (and fetches the same page again, inserting nothing twice) or the new one.
 */
export async function runStep(
  deps: StepDeps,
  rawInput: unknown,
  invocation: StepInvocation = {},
): Promise<StepOutput> {
  const deadlineMs = invocation.deadlineMs ?? Number.POSITIVE_INFINITY;
  const input = stepInputSchema.parse(rawInput);
  const { store, clock, logger, metrics } = deps;
  const config = resolveConfig(deps.config);
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

  // The remainder is slept by the pacer, which also spaces every retry that follows.
  const pacer = new RequestPacer(cp, config);
  try {
    const fetched = await fetchWithRecovery(deps, config, cp, pacer, deadlineMs);
    if (fetched.kind === 'window-spent') {
      cp = await store.recordRateLimited({
        sourceId,
        expectedVersion: cp.version,
        nextRequestAtMs: fetched.notBeforeMs,
        rateLimit: fetched.rateLimit,
        requestsMade: fetched.requests,
      });
      const { waitSeconds } = waitSecondsFor(fetched.notBeforeMs, clock.now());
      logger.warn('failed answers spent the rate-limit window: waiting for it instead of drawing a 429', {
        sourceId,
        requests: fetched.requests,
        rateLimit: fetched.rateLimit,
        waitSeconds,
      });
      return output(cp, { done: false, waitSeconds, iteration, page: emptyPage(), skipped: 'rate-limited' });
    }
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
    } else {
      await coolDown(deps, config, pacer, deadlineMs);
    }
    throw error;
  }
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

/** The given settings over the defaults; a setting passed as undefined keeps its default. */
function resolveConfig(given: StepDeps['config']): StepConfig {
  const set = Object.entries(given).filter(([, value]) => value !== undefined);
  return { ...configDefaults, ...Object.fromEntries(set) };
}

/**
 * A failed invocation is retried by the state machine after a jittered delay that may be zero:
 * wait out the spacing after our last request first, so that the retry's first request keeps it.
 */
async function coolDown(deps: StepDeps, config: StepConfig, pacer: RequestPacer, deadlineMs: number) {
  if (pacer.lastStartMs === null) return;
  const now = deps.clock.now();
  const wait = Math.min(pacer.lastStartMs + config.minSpacingMs - now, deadlineMs - now);
  if (wait > 0) await deps.clock.sleep(wait);
}

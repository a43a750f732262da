import { cursorExpiresWithin, cursorFromPosition, refreshCursor } from '../cursor.ts';
import {
  AuthError,
  CursorExpiredError,
  CursorInvalidError,
  CursorRejectedError,
  InvocationDeadlineError,
  RateLimitedError,
  type RateLimitInfo,
  UpstreamUnavailableError,
} from '../errors.ts';
import { rejectedBackoffMs } from '../pacing/backoff.ts';
import { planNextRequest } from '../pacing/headers.ts';
import type { RequestPacer } from '../pacing/request-pacer.ts';
import type { FetchPageResult } from '../upstream/types.ts';
import type { Checkpoint, SharedPacerPort, StepConfig, StepDeps } from './contract.ts';

/*
 * Getting one page out of an upstream that fails: transient faults are retried with jittered
 * backoff, a refused cursor is refreshed and then rebuilt from the stored position, and every
 * request of the step, retries and recovery included, goes through one pacer that keeps the
 * minimum spacing and counts the rate-limit window (failed answers count against it too).
 */

/** Full-jitter backoff (AWS Architecture Blog, "Exponential Backoff And Jitter"): base and cap. */
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 8000;
/** Requests with a built cursor answered 502 before the cursor counts as refused. */
const BUILT_502_ATTEMPTS = 3;
/** Times a request that missed its reserved instant reserves again before going back to the Wait state. */
const LATE_RESERVATIONS = 5;

/**
 * How late after its reserved instant a request may still go out (a timer fires late, the
 * event loop was busy with another chain's page). The shared pacer spaces the next
 * reservation by the spacing plus this, so that no two sends are closer than the spacing; a
 * request later than this reserves again instead of going out (it then loses only its
 * lateness: the pacer gives a released latest reservation's spacing back).
 */
export function lateToleranceMs(config: Pick<StepConfig, 'safetyMarginMs'>): number {
  return Math.max(2, Math.round(config.safetyMarginMs / 25));
}

export type Fetched =
  | { kind: 'page'; result: FetchPageResult; cursorUsed: string | null; requests: number }
  | {
      kind: 'rate-limited';
      error: RateLimitedError;
      notBeforeMs: number;
      requests: number;
      /** The headers to keep with the source, carrying the count of 429s in a row. */
      rateLimit: RateLimitInfo;
    }
  /**
   * No 429 was seen, but the answers that failed used up what the window had left: sending
   * another request now would be refused, so the step waits for the window like after a 429.
   */
  | { kind: 'window-spent'; notBeforeMs: number; rateLimit: RateLimitInfo; requests: number }
  /** The shared pacer has no slot within the in-task sleep: back to the Wait state. */
  | { kind: 'not-due'; notBeforeMs: number; requests: number }
  /** The upstream refused a cursor built from a range's start: the caller falls back to one chain. */
  | { kind: 'built-refused'; error: Error; requests: number };

/** How a chain's requests are made beyond the stored checkpoint. */
export interface FetchOptions {
  /**
   * The stored position is a range's start (a chain row's `(hi, ZERO_ID)`) and no cursor is
   * stored: the first request uses a cursor built from it, and a refusal is reported as
   * `built-refused` instead of recovered.
   */
  builtStart?: boolean;
  /** Every request reserves its start here first (all chains of the upstream share it). */
  shared?: SharedPacerPort;
}

type CursorStage = 'stored' | 'refreshed' | 'rebuilt';

/**
 * One page, surviving what the upstream does. Never restarts from page one. Every request is
 * bounded by the invocation's deadline minus the headroom for the write; when too little time
 * is left for another attempt, the transient error (or {@link InvocationDeadlineError}) is
 * thrown instead of starting it, and the state machine's retry takes over.
 */
export async function fetchWithRecovery(
  deps: StepDeps,
  config: StepConfig,
  cp: Checkpoint,
  pacer: RequestPacer,
  deadlineMs: number,
  options: FetchOptions = {},
): Promise<Fetched> {
  const { upstream, clock, logger } = deps;
  const { shared } = options;
  const random = config.random ?? Math.random;
  const retryDeadline = clock.now() + config.retryBudgetMs;
  const requestsEndBy = deadlineMs - config.writeHeadroomMs;

  let stage: CursorStage = 'stored';
  const builtStart =
    options.builtStart === true && cp.cursor === null && cp.positionTs !== null && cp.positionId !== null;
  let cursor = builtStart
    ? cursorFromPosition(
        { ts: cp.positionTs as number, id: cp.positionId as string },
        clock.now(),
        config.cursorTtlMs,
      )
    : cp.cursor;

  let requests = 0;
  let reservedStartMs = 0;
  let attempt = 0;
  let backoffUntil = 0;
  let lastFault: UpstreamUnavailableError | null = null;
  let builtFaults = 0;
  let lateSlots = 0;
  const tolerance = lateToleranceMs(config);
  const warnSuspect = (rate: RateLimitInfo | null | undefined) => {
    if (rate?.suspect)
      logger.warn('rate-limit headers unreadable or out of bounds: the safe values are used', {
        sourceId: cp.sourceId,
        suspect: rate.suspect,
      });
  };
  for (;;) {
    // With the shared pacer the window is its business: this invocation's view counts only its own requests.
    if (!shared && pacer.windowSpent()) {
      const back = pacer.windowBackAtMs(clock.now());
      return { kind: 'window-spent', ...back, requests };
    }
    let startAt = Math.max(clock.now(), pacer.nextStartMs(), backoffUntil);
    if (startAt + config.minAttemptMs > requestsEndBy) {
      throw (
        lastFault ??
        new InvocationDeadlineError(
          `Source "${cp.sourceId}": only ${Math.max(0, requestsEndBy - clock.now())} ms of this invocation are left for ` +
            `requests (the rest is kept for the write, WRITE_HEADROOM_MS=${config.writeHeadroomMs}), less than ` +
            `MIN_ATTEMPT_MS=${config.minAttemptMs}: no request was started. The state machine retries with a fresh ` +
            'invocation; if this repeats, raise the function timeout or lower MIN_REQUEST_SPACING_MS / MAX_IN_TASK_SLEEP_MS.',
        )
      );
    }
    if (attempt > 0 && startAt >= retryDeadline) {
      throw (
        lastFault ??
        new InvocationDeadlineError(
          `Source "${cp.sourceId}": cursor recovery did not finish within RETRY_BUDGET_MS=${config.retryBudgetMs} ms. ` +
            'Nothing was lost; the state machine retries from the stored checkpoint.',
        )
      );
    }
    if (shared) {
      // The instant is reserved last, after the checks that could still give it up.
      const slot = await shared.reserve({
        nowMs: startAt,
        minSpacingMs: config.minSpacingMs,
        maxAheadMs: Math.max(
          0,
          Math.min(config.maxInTaskSleepMs, requestsEndBy - config.minAttemptMs - startAt),
        ),
        safetyMarginMs: config.safetyMarginMs,
        lateToleranceMs: tolerance,
        longestWindowMs: config.longestWindowMs,
      });
      if (!slot.reserved) return { kind: 'not-due', notBeforeMs: slot.startAtMs, requests };
      reservedStartMs = slot.startAtMs;
      startAt = Math.max(startAt, slot.startAtMs);
    }
    // A timer may fire a millisecond early: never send before the instant.
    while (clock.now() < startAt) await clock.sleep(startAt - clock.now());
    if (shared && clock.now() > reservedStartMs + tolerance) {
      // Too late for the reservation (a slow lock or connection, a busy event loop): going out
      // now could be closer than the spacing to the next reservation. Give it back, ask again.
      await shared.release({ startAtMs: reservedStartMs });
      if (++lateSlots > LATE_RESERVATIONS) return { kind: 'not-due', notBeforeMs: clock.now(), requests };
      continue;
    }
    // Checked after the pacer's sleep, which may be longer than the refresh margin.
    if (attempt === 0 && cursor && cursorExpiresWithin(cursor, clock.now(), config.cursorRefreshMarginMs)) {
      cursor = refreshOrRebuild(cp, cursor, clock.now(), config.cursorTtlMs);
      stage = 'refreshed';
      logger.info('cursor expired or about to: refreshed before the request', { sourceId: cp.sourceId });
    }

    attempt++;
    requests++;
    const timeoutMs = Math.max(1, Math.min(config.requestTimeoutMs, requestsEndBy - clock.now()));
    const requestStartMs = clock.now();
    pacer.started(requestStartMs);
    try {
      const result = await upstream.fetchEvents({ limit: config.pageSize, cursor, timeoutMs });
      pacer.answered(result.rateLimit);
      await shared?.answered({
        requestStartMs,
        reservedStartMs,
        answerAtMs: clock.now(),
        rateLimit: result.rateLimit,
        resetGranularityMs: config.resetGranularityMs,
      });
      warnSuspect(result.rateLimit);
      return { kind: 'page', result, cursorUsed: cursor, requests };
    } catch (error) {
      await shared?.answered({
        requestStartMs,
        reservedStartMs,
        answerAtMs: clock.now(),
        rateLimit: (error as { rateLimit?: RateLimitInfo | null }).rateLimit ?? null,
        retryAfterSeconds: error instanceof RateLimitedError ? error.retryAfterSeconds : null,
        jitter: random(),
        resetGranularityMs: config.resetGranularityMs,
        longestWindowMs: config.longestWindowMs,
      });
      if (error instanceof RateLimitedError) {
        pacer.answered(error.rateLimit);
        warnSuspect(error.rateLimit);
        const now = clock.now();
        const plan = planNextRequest({
          lastRequestStartMs: now,
          responseAtMs: now,
          minSpacingMs: config.minSpacingMs,
          rateLimit: error.rateLimit ?? null,
          retryAfterSeconds: error.retryAfterSeconds,
          safetyMarginMs: config.safetyMarginMs,
          resetGranularityMs: config.resetGranularityMs,
        });
        // 429s in a row back off further each time, kept with the source so a resume does too.
        const inARow = (cp.lastRateLimit?.rejectedInARow ?? 0) + 1;
        const notBeforeMs = Math.max(
          plan.notBeforeMs,
          now + rejectedBackoffMs(inARow, random(), config.longestWindowMs),
        );
        const rateLimit: RateLimitInfo = {
          ...(error.rateLimit ?? { limit: 0, remaining: 0, resetSeconds: error.retryAfterSeconds }),
          rejectedInARow: inARow,
        };
        return { kind: 'rate-limited', error, notBeforeMs, requests, rateLimit };
      }
      pacer.answered(null);
      if (error instanceof AuthError) throw error;

      const sent = cursor;
      const cursorRefused =
        sent !== null &&
        (error instanceof CursorExpiredError ||
          error instanceof CursorInvalidError ||
          (error instanceof UpstreamUnavailableError && error.status === 502));
      if (cursorRefused && builtStart && stage === 'stored') {
        // A 400 is the service's verdict on the built cursor. A 502 may be the load balancer's
        // passing fault: only one that repeats (three in all) counts as a refusal.
        const passing = error instanceof UpstreamUnavailableError && ++builtFaults < BUILT_502_ATTEMPTS;
        if (!passing) return { kind: 'built-refused', error: error as Error, requests };
        lastFault = error as UpstreamUnavailableError;
        backoffUntil =
          clock.now() + Math.floor(random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt));
        logger.warn('502 on a built cursor: trying it again before calling it refused', {
          sourceId: cp.sourceId,
          attempt: builtFaults,
        });
        continue;
      }
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
        if (error instanceof UpstreamUnavailableError) lastFault = error;
        stage = nextStage;
        cursor =
          nextStage === 'refreshed'
            ? refreshOrRebuild(cp, sent, clock.now(), config.cursorTtlMs)
            : rebuild(cp, clock.now(), config.cursorTtlMs, error);
        continue;
      }

      if (error instanceof UpstreamUnavailableError) {
        lastFault = error;
        const backoff = Math.floor(random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt));
        backoffUntil = clock.now() + backoff;
        logger.warn('transient upstream fault, retrying', {
          sourceId: cp.sourceId,
          attempt,
          backoffMs: Math.max(backoff, pacer.nextStartMs() - clock.now()),
          status: error.status,
          error: error.message,
        });
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

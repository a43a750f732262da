import { cursorExpiresWithin, cursorFromPosition, refreshCursor } from '../cursor.ts';
import {
  AuthError,
  CursorExpiredError,
  CursorInvalidError,
  CursorRejectedError,
  RateLimitedError,
  UpstreamUnavailableError,
} from '../errors.ts';
import { planNextRequest } from '../pacing.ts';
import type { FetchPageResult } from '../upstream/types.ts';
import type { Checkpoint, StepConfig, StepDeps } from './contract.ts';

/*
 * Getting one page out of an upstream that fails: transient faults are retried with jittered
 * backoff and a refused cursor is refreshed, then rebuilt from the stored position.
 */

type CursorStage = 'stored' | 'refreshed' | 'rebuilt';

export type Fetched =
  | { kind: 'page'; result: FetchPageResult; cursorUsed: string | null; requests: number }
  | { kind: 'rate-limited'; error: RateLimitedError; notBeforeMs: number; requests: number };

/**
 * One page, surviving what the upstream does: transient faults are retried with jittered
 * backoff inside a time budget; a refused cursor is refreshed, then rebuilt from the stored
 * position, and only then is the source declared stuck. Never restarts from page one.
 */
export async function fetchWithRecovery(
  deps: StepDeps,
  config: StepConfig,
  cp: Checkpoint,
): Promise<Fetched> {
  const { upstream, clock, logger } = deps;
  const random = config.random ?? Math.random;
  const margin = config.cursorRefreshMarginMs;
  const ttl = config.cursorTtlMs;
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

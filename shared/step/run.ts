import { configDefaults } from '../config.ts';
import { decodeCursor } from '../cursor.ts';
import { ConfigError, DataSyncError, UpstreamProtocolError } from '../errors.ts';
import { planNextRequest, waitSecondsFor } from '../pacing/headers.ts';
import { normalisePage } from '../upstream/normalise.ts';
import type { NormalisedEvent } from '../upstream/types.ts';
import { chainKey } from './chains.ts';
import {
  type Checkpoint,
  type PlanOutput,
  type StepConfig,
  type StepDeps,
  type StepOutput,
  stepInputSchema,
  stepOutputSchema,
} from './contract.ts';
import { runPlan } from './plan.ts';
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
 * One invocation of the fetch-page function: the Plan task (`action: 'plan'`) or one page of a
 * chain. Both tasks of the state machine invoke the same function.
 */
export async function runAction(
  deps: StepDeps,
  rawInput: unknown,
  invocation: StepInvocation = {},
): Promise<StepOutput | PlanOutput> {
  const { action } = stepInputSchema.parse(rawInput);
  return action === 'plan' ? runPlan(deps, rawInput, invocation) : runStep(deps, rawInput, invocation);
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
  if (input.action !== 'page') {
    throw new ConfigError(
      `runStep runs one page; the "${input.action}" action is runPlan's (shared/step/plan.ts).`,
    );
  }
  const { store, clock, logger, metrics } = deps;
  const config = resolveConfig(deps.config);
  const { sourceId, chain } = input.state;
  const key = chainKey(sourceId, chain);
  const owner = input.executionId;
  const iteration = input.state.iteration + 1;
  const handoverFrom = input.state.parentExecutionId ?? null;
  const carry = { perChainCap: input.state.perChainCap, parentExecutionId: input.state.parentExecutionId };
  const output = (c: Checkpoint, o: OutputFields) => outputOf(c, sourceId, chain, { ...carry, ...o });

  let handover = handoverFrom;
  if (chain > 0) {
    // The source's own row is the source's lease: a chain keeps it alive while chain 0 may be idle.
    try {
      await store.renewSourceLease({ sourceId, owner, nowMs: clock.now(), ttlMs: config.leaseTtlMs });
    } catch (error) {
      // The last open range ended while this chain waited for a retry: its lease went with the
      // completion. Nothing is left for it, and that is no failure.
      const head = (await store.listChains(sourceId)).find((r) => r.chain === 0);
      if (head?.status !== 'complete') throw error;
      await store.releaseLease({ sourceId: key, owner });
      logger.info('source already complete', { sourceId, chain });
      return output(head, { done: true, waitSeconds: 0, iteration, page: emptyPage() });
    }
    // Holding the source's lease is what keeps other executions out; a chain row still leased
    // to an earlier execution of this source (one that failed, or was killed between its Plan
    // and this chain's first page) is taken over. Its stale writes fail on the version.
    const row = (await store.listChains(sourceId)).find((r) => r.chain === chain);
    if (row?.leaseOwner && row.leaseOwner !== owner) handover = row.leaseOwner;
  }
  let cp = await store.acquireLease({
    sourceId: key,
    owner,
    nowMs: clock.now(),
    ttlMs: config.leaseTtlMs,
    handoverFrom: handover,
  });
  if (chain > 0 && cp.chainOf !== sourceId) {
    throw new ConfigError(
      `Source "${sourceId}" has no planned chain ${chain}: chains are started by the state machine's Plan task. ` +
        'Start the execution with {"sourceId":"' +
        sourceId +
        '"} instead of invoking a chain by hand.',
    );
  }

  if (cp.status === 'complete' && chain === 0) {
    await store.releaseLease({ sourceId: key, owner });
    logger.info('source already complete', { sourceId, totals: totalsOf(cp) });
    return output(cp, { done: true, waitSeconds: 0, iteration, page: emptyPage() });
  }

  if (cp.rangeDone || cp.status === 'complete') {
    // A crash between the range's last page and the hand-over: do the hand-over now.
    const next = await takeOverOrEnd(deps, config, {
      sourceId,
      chain,
      owner,
      minSplitMs: Number.MAX_SAFE_INTEGER,
      expectedVersion: cp.version,
    });
    if (next === null) return output(cp, { done: true, waitSeconds: 0, iteration, page: emptyPage() });
    cp = next;
  }

  // The Wait state can only wait whole seconds: finish the sub-second remainder here, but never
  // sit in a billed function for long; send a long remainder back to the Wait state instead.
  const due = cp.nextRequestAtMs ?? 0;
  const early = due - clock.now();
  // Not due yet: back to the Wait state, at least one second (it comes back early, not late).
  const notYetDue = (notBeforeMs: number) =>
    output(cp, {
      done: false,
      waitSeconds: Math.max(1, waitSecondsFor(notBeforeMs, clock.now()).waitSeconds),
      iteration,
      page: emptyPage(),
      skipped: 'not-yet-due',
    });
  if (early > config.maxInTaskSleepMs) return notYetDue(due);

  // The remainder is slept by the pacer, which also spaces every retry that follows.
  // A source read by several chains (or that was, before a fallback) paces every request through
  // the upstream's shared pacer: this row's last headers are one chain's view, older than other
  // chains' requests. A one-chain source keeps its own pacer, the checkpoint's.
  const chained = cp.chainOf !== null || cp.chainMode === 'chains' || cp.chainMode === 'fallback';
  const shared = chained ? store.pacer : undefined;
  const pacer = new RequestPacer(shared ? { ...cp, lastRateLimit: null } : cp, config);
  const builtStart = cp.rangeHiTs !== null;
  try {
    const fetched = await fetchWithRecovery(deps, config, cp, pacer, deadlineMs, {
      builtStart,
      ...(shared ? { shared } : {}),
    });
    if (fetched.kind === 'not-due') return notYetDue(fetched.notBeforeMs);
    if (fetched.kind === 'built-refused') {
      const reason = `the upstream refused a cursor built from an instant (${fetched.error.name}: ${fetched.error.message.slice(0, 200)})`;
      return await fallBack(deps, { sourceId, chain, owner, reason }, (c) =>
        output(c, { done: chain > 0, waitSeconds: 0, iteration, page: emptyPage() }),
      );
    }
    if (fetched.kind === 'window-spent') {
      cp = await store.recordRateLimited({
        sourceId: key,
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
        sourceId: key,
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
    const normalised = normalisePage(page.data, { invalidUtf8: page.invalidUtf8 === true });
    const { rejects } = normalised;
    const hi = cp.rangeHiTs;
    const lo = cp.rangeLoTs;
    const above = hi === null ? undefined : normalised.events.find((e) => e.occurredAtMs > hi);
    if (above) {
      const reason =
        `rows outside the requested range: a page for chain ${chain} (from ${new Date(hi as number).toISOString()} down) ` +
        `held an event at ${new Date(above.occurredAtMs).toISOString()}, so the upstream does not position built cursors by instant`;
      return await fallBack(deps, { sourceId, chain, owner, reason }, (c) =>
        output(c, { done: chain > 0, waitSeconds: 0, iteration, page: emptyPage() }),
      );
    }
    // The page that crosses the range's end is stored whole: its rows below the end belong to
    // the next range too, and the primary key absorbs the overlap whatever the upstream does with
    // a cursor's id. So everything above this chain's stored cursor is stored, and a fallback
    // that resumes one chain from that cursor is exact.
    const { events } = normalised;
    const reachedEnd = lo !== null && events.some((e) => e.occurredAtMs < lo);
    const next = nextPosition(cp, page.hasMore, page.nextCursor, normalised.events, sourceId);
    const ranged = cp.chainOf !== null || cp.chainMode === 'chains';
    const rangeDone = ranged && (reachedEnd || !page.hasMore);

    const responseAtMs = result.startedAtMs + result.latencyMs;
    const plan = planNextRequest({
      lastRequestStartMs: result.startedAtMs,
      responseAtMs,
      minSpacingMs: config.minSpacingMs,
      // With the shared pacer the window is its business; this chain only keeps its own spacing.
      rateLimit: shared ? null : result.rateLimit,
      safetyMarginMs: config.safetyMarginMs,
    });

    const persistStarted = clock.now();
    const persisted = await store.persistPage({
      sourceId: key,
      eventsSourceId: sourceId,
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
        rangeDone,
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
    const belowRange = lo === null ? 0 : events.filter((e) => e.occurredAtMs < lo).length;
    metrics.add('Pages', 'Count', 1);
    metrics.add('EventsInserted', 'Count', persisted.inserted);
    metrics.add('DuplicatesSkipped', 'Count', persisted.duplicates);
    metrics.add('EventsRejected', 'Count', rejects.length);
    metrics.add('UpstreamLatencyMs', 'Milliseconds', result.latencyMs);
    metrics.add('PersistMs', 'Milliseconds', persistMs);

    // The last page's commit released the lease too (persistPage).
    let done = !page.hasMore;
    let { waitSeconds } = waitSecondsFor(plan.notBeforeMs, clock.now());
    if (shared) waitSeconds = 0; // the shared pacer spaces the next request, whichever chain sends it
    if (rangeDone) {
      const first = normalised.events[0];
      const last = normalised.events.at(-1);
      // What one page spans here: a range left over that is shorter than two of them is not
      // worth the request a take-over costs. Local, so it follows skewed timestamps.
      const pageSpanMs = first && last ? Math.max(1, first.occurredAtMs - last.occurredAtMs) : 1;
      const taken = await takeOverOrEnd(deps, config, {
        sourceId,
        chain,
        owner,
        minSplitMs: 2 * pageSpanMs,
        expectedVersion: cp.version,
      });
      done = taken === null;
      if (taken) cp = taken;
      waitSeconds = 0;
    }
    logger.info(
      done ? (ranged ? 'range complete' : 'source complete') : rangeDone ? 'range taken over' : 'page stored',
      {
        sourceId,
        chain,
        ...(belowRange > 0 ? { belowRange } : {}),
        page: pageCounts,
        totals: totalsOf(cp),
        requestId: result.requestId,
        rateLimit: result.rateLimit,
        upstreamLatencyMs: result.latencyMs,
        persistMs,
        writePath: persisted.writePath,
        waitSeconds,
        pacing: plan.reason,
      },
    );
    return output(cp, { done, waitSeconds: done ? 0 : waitSeconds, iteration, page: pageCounts });
  } catch (error) {
    if (error instanceof DataSyncError && !error.transient) {
      // A fatal error ends this execution: leave a trace for `ingest status` and free the
      // source at once, so the operator's fix-and-restart is not blocked by our lease.
      await store
        .recordFailure({ sourceId, error: `${error.name}: ${error.message}` })
        .catch(() => undefined);
      await releaseAll(store, sourceId, owner);
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

interface OutputFields {
  done: boolean;
  waitSeconds: number;
  iteration: number;
  page: StepOutput['page'];
  skipped?: StepOutput['skipped'];
  perChainCap?: number | undefined;
  parentExecutionId?: string | null | undefined;
}

function outputOf(cp: Checkpoint, sourceId: string, chain: number, o: OutputFields): StepOutput {
  return stepOutputSchema.parse({
    sourceId,
    chain,
    done: o.done,
    waitSeconds: o.waitSeconds,
    nextCursor: cp.cursor,
    page: o.page,
    totals: totalsOf(cp),
    iteration: o.iteration,
    ...(o.skipped ? { skipped: o.skipped } : {}),
    ...(o.perChainCap !== undefined ? { perChainCap: o.perChainCap } : {}),
    ...(o.parentExecutionId ? { parentExecutionId: o.parentExecutionId } : {}),
  });
}

/** Frees every row of the source (its own and its chains') that `owner` holds. */
async function releaseAll(store: StepDeps['store'], sourceId: string, owner: string): Promise<void> {
  const rows = await store.listChains(sourceId).catch(() => []);
  const held = rows.filter((r) => r.leaseOwner === owner).map((r) => r.sourceId);
  for (const key of new Set([...held, sourceId])) {
    await store.releaseLease({ sourceId: key, owner }).catch(() => undefined);
  }
}

/**
 * The chain's range is done: take over the far half of what is left of the largest open range,
 * or end the chain (and the source, when it was the last open range). Returns the chain's row
 * with its new range, or null when the chain has nothing more to read.
 */
async function takeOverOrEnd(
  deps: StepDeps,
  config: StepConfig,
  args: { sourceId: string; chain: number; owner: string; minSplitMs: number; expectedVersion: number },
): Promise<Checkpoint | null> {
  const fin = await deps.store.finishRange(args);
  const row = fin.chains.find((c) => c.chain === args.chain) ?? null;
  if (fin.takeover && row) {
    deps.logger.info('range done: took over the far half of the largest open range', {
      sourceId: args.sourceId,
      chain: args.chain,
      hi: new Date(fin.takeover.hiTs).toISOString(),
      lo: fin.takeover.loTs === null ? null : new Date(fin.takeover.loTs).toISOString(),
    });
    return row;
  }
  void config;
  deps.logger.info(fin.sourceComplete ? 'source complete' : 'range done: nothing left to take over', {
    sourceId: args.sourceId,
    chain: args.chain,
  });
  return null;
}

/** The upstream does not honour built cursors: one chain reads on from where the source is exact. */
async function fallBack<T>(
  deps: StepDeps,
  args: { sourceId: string; chain: number; owner: string; reason: string },
  out: (cp: Checkpoint) => T,
): Promise<T> {
  const rows = await deps.store.fallbackToOneChain({
    sourceId: args.sourceId,
    owner: args.owner,
    reason: args.reason,
  });
  deps.logger.warn('falling back to one chain for this source', {
    sourceId: args.sourceId,
    chain: args.chain,
    reason: args.reason,
  });
  deps.metrics.add('ChainFallbacks', 'Count', 1);
  const row = rows.find((c) => c.chain === args.chain) ?? rows[0];
  if (!row) throw new ConfigError(`Source "${args.sourceId}" has no checkpoint row after the fallback.`);
  return out(row);
}

/** The given settings over the defaults; a setting passed as undefined keeps its default. */
export function resolveConfig(given: StepDeps['config']): StepConfig {
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

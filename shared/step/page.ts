import { decodeCursor } from '../cursor.ts';
import { CheckpointConflictError, ConfigError, DataSyncError, UpstreamProtocolError } from '../errors.ts';
import { type PacingPlan, planNextRequest, waitSecondsFor } from '../pacing/headers.ts';
import { RequestPacer } from '../pacing/request-pacer.ts';
import { normalisePage } from '../upstream/normalise.ts';
import type { NormalisedEvent } from '../upstream/types.ts';
import { chainKey } from './chains.ts';
import {
  type Checkpoint,
  type PageInput,
  type PersistPageResult,
  type SharedPacerPort,
  type StepDeps,
  type StepInvocation,
  type StepOutput,
  stepOutputSchema,
} from './contract.ts';
import { checkStreamPosition } from './position.ts';
import { type Fetched, fetchWithRecovery } from './recovery.ts';
import { atFloor, inTopUpWalk, rangeEnds } from './topup.ts';
import { stepTotals, totalsOf } from './totals.ts';

/** One page invocation: who runs it, for which chain, and how its outputs are shaped. */
interface PageRun {
  deps: StepDeps;
  sourceId: string;
  chain: number;
  /** The chain's checkpoint row (`chainKey`). */
  key: string;
  owner: string;
  /** The execution this one continues (continue-as-new): it may still hold the lease. */
  handoverFrom: string | null;
  deadlineMs: number;
  output(cp: Checkpoint, fields: PageFields): StepOutput;
}

type PageFields = Pick<OutputFields, 'done' | 'waitSeconds' | 'page' | 'skipped'>;

/** A phase either ends the invocation with its output or hands the next phase a checkpoint. */
type Phase<T> = { end: StepOutput } | { next: T };

/**
 * Moves one source forward by exactly one page. Any invocation may die at any instant: the
 * page's rows and the checkpoint are committed in one transaction, so a retry either sees the
 * old checkpoint (and fetches the same page again, inserting nothing twice) or the new one.
 * The input is parsed by the front door (index.ts).
 */
export async function runPage(
  deps: StepDeps,
  input: PageInput,
  invocation: StepInvocation = {},
): Promise<StepOutput> {
  const run = pageRun(deps, input, invocation);
  const claimed = await claimChain(run);
  if ('end' in claimed) return claimed.end;
  const cp = claimed.next;
  // The Wait state can only wait whole seconds: finish the sub-second remainder here, but never
  // sit in a billed function for long; send a long remainder back to the Wait state instead.
  const due = cp.nextRequestAtMs ?? 0;
  if (due - deps.clock.now() > deps.config.maxInTaskSleepMs) return notYetDue(run, cp, due);

  // Every request of every source paces through the upstream's shared pacer when the store has
  // one: it keeps a log of the starts, which the checkpoint's last headers are not (after
  // failed answers spent the slot a Reset named, they cannot say when the next one frees).
  // Without one (a store that paces nothing) the checkpoint's headers pace a one-chain source.
  const shared = deps.store.pacer;
  const pacer = new RequestPacer(shared ? { ...cp, lastRateLimit: null } : cp, deps.config);
  try {
    const waited = await waitForWindow(run, cp, pacer, shared);
    if ('end' in waited) return waited.end;
    const stored = await storePage(run, cp, waited.next, shared);
    if ('end' in stored) return stored.end;
    return await finishRangeOrContinue(run, stored.next);
  } catch (error) {
    await onFailure(run, pacer, error);
    throw error;
  }
}

function pageRun(deps: StepDeps, input: PageInput, invocation: StepInvocation): PageRun {
  const { sourceId, chain } = input.state;
  const iteration = input.state.iteration + 1;
  const carry = { perChainCap: input.state.perChainCap, parentExecutionId: input.state.parentExecutionId };
  return {
    deps,
    sourceId,
    chain,
    key: chainKey(sourceId, chain),
    owner: input.executionId,
    handoverFrom: input.state.parentExecutionId ?? null,
    deadlineMs: invocation.deadlineMs ?? Number.POSITIVE_INFINITY,
    output: (cp, fields) => outputOf(cp, sourceId, chain, { ...carry, iteration, ...fields }),
  };
}

/**
 * Phase 1, claim the chain: hold the source's lease (a chain > 0) and the chain row's, and end
 * here when there is nothing left to read. A range found done is handed over first.
 */
async function claimChain(run: PageRun): Promise<Phase<Checkpoint>> {
  const { deps, sourceId, chain, key, owner } = run;
  const { store, clock, logger, config } = deps;
  const ended = (cp: Checkpoint) => ({
    end: run.output(cp, { done: true, waitSeconds: 0, page: emptyPage() }),
  });
  let handover = run.handoverFrom;
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
      return ended(head);
    }
    // Holding the source's lease is what keeps other executions out; a chain row still leased
    // to an earlier execution of this source (one that failed, or was killed between its Plan
    // and this chain's first page) is taken over. Its stale writes fail on the version.
    const row = (await store.listChains(sourceId)).find((r) => r.chain === chain);
    if (row?.leaseOwner && row.leaseOwner !== owner) handover = row.leaseOwner;
  }
  const cp = await store.acquireLease({
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
    logger.info('source already complete', { sourceId, totals: stepTotals(totalsOf(cp)) });
    return ended(cp);
  }
  if (!cp.rangeDone && cp.status !== 'complete') return { next: cp };
  // A crash between the range's last page and the hand-over: do the hand-over now.
  const next = await takeOverOrEnd(deps, {
    sourceId,
    chain,
    owner,
    minSplitMs: Number.MAX_SAFE_INTEGER,
    expectedVersion: cp.version,
  });
  return next === null ? ended(cp) : { next };
}

/** Not due yet: back to the Wait state, at least one second (it comes back early, not late). */
function notYetDue(run: PageRun, cp: Checkpoint, notBeforeMs: number): StepOutput {
  return run.output(cp, {
    done: false,
    waitSeconds: Math.max(1, waitSecondsFor(notBeforeMs, run.deps.clock.now()).waitSeconds),
    page: emptyPage(),
    skipped: 'not-yet-due',
  });
}

type FetchedPage = Extract<Fetched, { kind: 'page' }>;

/**
 * Phase 2, wait for the window: the pacer sleeps out the remainder and spaces every retry,
 * and the page is fetched. A page that cannot be had now goes back to the Wait state; a
 * refused built cursor falls back to one chain.
 */
async function waitForWindow(
  run: PageRun,
  cp: Checkpoint,
  pacer: RequestPacer,
  shared: SharedPacerPort | undefined,
): Promise<Phase<FetchedPage>> {
  const { deps, sourceId, chain, owner } = run;
  const fetched = await fetchWithRecovery(deps, deps.config, cp, pacer, run.deadlineMs, {
    builtStart: cp.rangeHiTs !== null,
    ...(shared ? { shared } : {}),
  });
  switch (fetched.kind) {
    case 'page':
      return { next: fetched };
    case 'not-due':
      await countRequests(run, fetched.requests);
      return { end: notYetDue(run, cp, fetched.notBeforeMs) };
    case 'built-refused': {
      await countRequests(run, fetched.requests);
      const reason = `the upstream refused a cursor built from an instant (${fetched.error.name}: ${fetched.error.message.slice(0, 200)})`;
      return { end: await fallBack(deps, { sourceId, chain, owner, reason }, (c) => fellBack(run, c)) };
    }
    case 'window-spent':
    case 'rate-limited':
      return { end: await waitOutWindow(run, cp, fetched) };
  }
}

/**
 * Requests this invocation sent that stored nothing and drew no 429 (failed answers before a
 * slot that is not due, a refused built cursor, rows outside the range, a lost commit): counted
 * on the chain's row all the same, so the run's `requests` is every request sent.
 */
async function countRequests(run: PageRun, requests: number): Promise<void> {
  if (requests > 0) await run.deps.store.addRequests?.({ sourceId: run.key, requests });
}

/**
 * The window is spent: by a 429, or by failed answers that used up what it had left (another
 * request now would draw a 429). Either way the checkpoint keeps the instant a slot comes back.
 */
async function waitOutWindow(
  run: PageRun,
  cp: Checkpoint,
  fetched: Extract<Fetched, { kind: 'window-spent' | 'rate-limited' }>,
): Promise<StepOutput> {
  const { store, clock, logger, metrics } = run.deps;
  const refused = fetched.kind === 'rate-limited';
  const next = await store.recordRateLimited({
    sourceId: run.key,
    expectedVersion: cp.version,
    nextRequestAtMs: fetched.notBeforeMs,
    // After a 429 the headers carry the count of 429s in a row (recovery.ts): a resume keeps backing off.
    rateLimit: fetched.rateLimit,
    requestsMade: fetched.requests,
  });
  if (refused) metrics.add('RateLimited', 'Count', 1);
  const { waitSeconds } = waitSecondsFor(fetched.notBeforeMs, clock.now());
  if (refused) {
    logger.warn('rate limited: not advancing', {
      sourceId: run.sourceId,
      retryAfterSeconds: fetched.error.retryAfterSeconds,
      rateLimit: fetched.error.rateLimit,
      waitSeconds,
    });
  } else {
    logger.warn('failed answers spent the rate-limit window: waiting for it instead of drawing a 429', {
      sourceId: run.sourceId,
      requests: fetched.requests,
      rateLimit: fetched.rateLimit,
      waitSeconds,
    });
  }
  return run.output(next, { done: false, waitSeconds, page: emptyPage(), skipped: 'rate-limited' });
}

/** After a fallback chain 0 reads on; any other chain ends. */
function fellBack(run: PageRun, cp: Checkpoint): StepOutput {
  return run.output(cp, { done: run.chain > 0, waitSeconds: 0, page: emptyPage() });
}

/** What the last phase needs of a stored page. */
interface StoredPage {
  cp: Checkpoint;
  fetched: FetchedPage;
  events: NormalisedEvent[];
  persisted: PersistPageResult;
  pageCounts: StepOutput['page'];
  plan: PacingPlan;
  ranged: boolean;
  rangeDone: boolean;
  belowRange: number;
  persistMs: number;
  shared: boolean;
}

/**
 * Phase 3, store the page: normalise it, check it lies in the chain's range, and commit its
 * rows with the checkpoint's next position in one transaction.
 */
async function storePage(
  run: PageRun,
  cp: Checkpoint,
  fetched: FetchedPage,
  shared: SharedPacerPort | undefined,
): Promise<Phase<StoredPage>> {
  const { deps, sourceId, chain, owner } = run;
  const { store, clock, metrics, config } = deps;
  const { result, cursorUsed, requests } = fetched;
  const { page } = result;
  const normalised = normalisePage(page.data, page);
  const { events, rejects } = normalised;
  const outside = aboveRange(cp, events, chain);
  if (outside) {
    await countRequests(run, requests);
    return {
      end: await fallBack(deps, { sourceId, chain, owner, reason: outside }, (c) => fellBack(run, c)),
    };
  }
  const lo = cp.rangeLoTs;
  // The page that crosses the range's end is stored whole: its rows below the end belong to
  // the next range too, and the primary key absorbs the overlap whatever the upstream does with
  // a cursor's id. So everything above this chain's stored cursor is stored, and a fallback
  // that resumes one chain from that cursor is exact.
  const reachedEnd = lo !== null && events.some((e) => e.occurredAtMs < lo);
  const next = nextPosition(cp, page.hasMore, page.nextCursor, events, sourceId);
  const { emptyPage } = checkStreamPosition(cp, page, next, sourceId);
  // A top-up's walk is ranged whatever the source's mode: its last range ends at the floor (topup.ts).
  const ranged = cp.chainOf !== null || cp.chainMode === 'chains' || inTopUpWalk(cp);
  const floor = await atFloor(deps, cp, events, sourceId);
  const rangeDone = ranged && rangeEnds({ reachedEnd, hasMore: page.hasMore, floor });
  // With the shared pacer the window is its business; this chain only keeps its own spacing.
  const plan = planNextRequest({
    lastRequestStartMs: result.startedAtMs,
    responseAtMs: result.startedAtMs + result.latencyMs,
    minSpacingMs: config.minSpacingMs,
    rateLimit: shared ? null : result.rateLimit,
    safetyMarginMs: config.safetyMarginMs,
    resetGranularityMs: config.resetGranularityMs,
  });

  const persistStarted = clock.now();
  const persisted = await store
    .persistPage({
      sourceId: run.key,
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
        emptyPage,
        lateBeyondLookback: floor.lateBeyondLookback,
      },
      requestsMade: requests,
      rateLimitedSeen: 0,
    })
    .catch(async (error: unknown) => {
      // Another invocation moved the row first (a fallback, a retry): this page is not stored,
      // but its request was sent.
      if (error instanceof CheckpointConflictError) await countRequests(run, requests).catch(() => undefined);
      throw error;
    });
  const persistMs = clock.now() - persistStarted;
  const pageCounts = {
    received: page.data.length,
    inserted: persisted.inserted,
    duplicates: persisted.duplicates,
    rejected: rejects.length,
  };
  countPage(metrics, pageCounts, result.latencyMs, persistMs);
  const belowRange = lo === null ? 0 : events.filter((e) => e.occurredAtMs < lo).length;
  const stored = { fetched, events, persisted, pageCounts, plan, ranged, rangeDone, belowRange, persistMs };
  return { next: { ...stored, cp: persisted.checkpoint, shared: shared !== undefined } };
}

/**
 * The fallback's reason when the page holds an event above the chain's range (its cursor was
 * built from the range's start, and the upstream did not position it there), else null.
 */
function aboveRange(cp: Checkpoint, events: NormalisedEvent[], chain: number): string | null {
  const hi = cp.rangeHiTs;
  const above = hi === null ? undefined : events.find((e) => e.occurredAtMs > hi);
  if (hi === null || !above) return null;
  return (
    `rows outside the requested range: a page for chain ${chain} (from ${new Date(hi).toISOString()} down) ` +
    `held an event at ${new Date(above.occurredAtMs).toISOString()}, so the upstream does not position built cursors by instant`
  );
}

function countPage(
  metrics: StepDeps['metrics'],
  page: StepOutput['page'],
  upstreamLatencyMs: number,
  persistMs: number,
): void {
  metrics.add('Pages', 'Count', 1);
  metrics.add('EventsInserted', 'Count', page.inserted);
  metrics.add('DuplicatesSkipped', 'Count', page.duplicates);
  metrics.add('EventsRejected', 'Count', page.rejected);
  metrics.add('UpstreamLatencyMs', 'Milliseconds', upstreamLatencyMs);
  metrics.add('PersistMs', 'Milliseconds', persistMs);
}

/**
 * Phase 4, finish the range or continue: a chain whose range is done takes over part of the
 * largest open range or ends; otherwise the next page is due when the pacing plan says.
 */
async function finishRangeOrContinue(run: PageRun, stored: StoredPage): Promise<StepOutput> {
  const { deps, sourceId, chain, owner } = run;
  const { cp: persistedCp, fetched, events, persisted, pageCounts, plan, ranged, rangeDone } = stored;
  const { result } = fetched;
  let cp = persistedCp;
  // The last page's commit released the lease too (persistPage).
  let done = !result.page.hasMore;
  let { waitSeconds } = waitSecondsFor(plan.notBeforeMs, deps.clock.now());
  if (stored.shared) waitSeconds = 0; // the shared pacer spaces the next request, whichever chain sends it
  if (rangeDone) {
    const first = events[0];
    const last = events.at(-1);
    // What one page spans here: a range left over that is shorter than two of them is not
    // worth the request a take-over costs. Local, so it follows skewed timestamps.
    const pageSpanMs = first && last ? Math.max(1, first.occurredAtMs - last.occurredAtMs) : 1;
    const taken = await takeOverOrEnd(deps, {
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
  deps.logger.info(
    done ? (ranged ? 'range complete' : 'source complete') : rangeDone ? 'range taken over' : 'page stored',
    {
      sourceId,
      chain,
      ...(stored.belowRange > 0 ? { belowRange: stored.belowRange } : {}),
      page: pageCounts,
      totals: stepTotals(totalsOf(cp)),
      requestId: result.requestId,
      rateLimit: result.rateLimit,
      // When the request went out (epoch ms): where the time between requests went.
      requestStartedAtMs: result.startedAtMs,
      upstreamLatencyMs: result.latencyMs,
      persistMs: stored.persistMs,
      writePath: persisted.writePath,
      waitSeconds,
      pacing: plan.reason,
    },
  );
  return run.output(cp, { done, waitSeconds: done ? 0 : waitSeconds, page: pageCounts });
}

/**
 * A fatal error ends this execution: leave a trace for `ingest status` and free the source at
 * once, so the operator's fix-and-restart is not blocked by our lease. A transient one is
 * retried by the state machine, after this invocation's spacing.
 */
async function onFailure(run: PageRun, pacer: RequestPacer, error: unknown): Promise<void> {
  const { store } = run.deps;
  if (error instanceof DataSyncError && !error.transient) {
    await store
      .recordFailure({ sourceId: run.sourceId, error: `${error.name}: ${error.message}` })
      .catch(() => undefined);
    await releaseAll(store, run.sourceId, run.owner);
  } else {
    await coolDown(run.deps, pacer, run.deadlineMs);
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
    totals: stepTotals(totalsOf(cp)),
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

/**
 * A failed invocation is retried by the state machine after a jittered delay that may be zero:
 * wait out the spacing after our last request first, so that the retry's first request keeps it.
 */
async function coolDown(deps: StepDeps, pacer: RequestPacer, deadlineMs: number) {
  if (pacer.lastStartMs === null) return;
  const now = deps.clock.now();
  const wait = Math.min(pacer.lastStartMs + deps.config.minSpacingMs - now, deadlineMs - now);
  if (wait > 0) await deps.clock.sleep(wait);
}

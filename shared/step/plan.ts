import { InvocationDeadlineError, LeaseHeldError } from '../errors.ts';
import { planNextRequest } from '../pacing/headers.ts';
import { RequestPacer } from '../pacing/request-pacer.ts';
import { normalisePage } from '../upstream/normalise.ts';
import type { FetchPageResult } from '../upstream/types.ts';
import { chainsWanted, planRanges } from './chains.ts';
import {
  type ChainMode,
  type Checkpoint,
  type CreatePlanArgs,
  type PlanInput,
  type PlanOutput,
  planOutputSchema,
  type StepConfig,
  type StepDeps,
  type StepInvocation,
} from './contract.ts';
import { fetchWithRecovery } from './recovery.ts';
import { planTopUp } from './topup.ts';
import { sourceTotals, stepTotals } from './totals.ts';

/**
 * The Plan task: which chains the state machine's Map runs now. The first time a source is
 * read, one request for page one tells the newest instant, the page's span, meta.total and the
 * upstream's latency; from these come the number of chains and their ranges. The page itself is
 * not stored (chain 0 reads it again): one request of the run's ~600, and a plan that needs no
 * write on the hot path. Later rounds (after a Map, or in a continued execution) list the
 * chains that still have a range to read. The input is parsed by the front door (index.ts).
 */
export async function runPlan(
  deps: StepDeps,
  input: PlanInput,
  invocation: StepInvocation = {},
): Promise<PlanOutput> {
  const deadlineMs = invocation.deadlineMs ?? Number.POSITIVE_INFINITY;
  const { store, clock, logger, config } = deps;
  const { sourceId, round } = input.state;
  const owner = input.executionId;
  const parentExecutionId = input.state.parentExecutionId ?? null;

  // The source's row is the source's lease: a second execution for the source stops here.
  let source: Checkpoint;
  try {
    source = await store.acquireLease({
      sourceId,
      owner,
      nowMs: clock.now(),
      ttlMs: config.leaseTtlMs,
      handoverFrom: parentExecutionId,
    });
  } catch (error) {
    // A scheduled start that finds the source being read (a long backfill, a slow top-up) ends
    // quietly: no failed execution, no alarm. The running execution reads what is new anyway.
    if (!(error instanceof LeaseHeldError && input.state.ifRunning === 'skip' && round === 0)) throw error;
    logger.info('the source is being read by another execution: this start ends quietly', {
      sourceId,
      reason: error.message,
    });
    const rows = await store.listChains(sourceId);
    return {
      ...planOutput(
        sourceId,
        round,
        parentExecutionId,
        rows[0]?.chainMode ?? 'single',
        rows,
        [],
        true,
        config,
      ),
      skipped: 'already-running',
    };
  }
  let rows = await store.listChains(sourceId);
  // A complete source started again is topped up, once per execution: the Replan after the
  // Map (round 1) finds it complete and ends the execution.
  const topUp = store.topUp;
  if (source.status === 'complete' && topUp && round === 0) {
    const planned = await planTopUp(deps, topUp, source, owner, deadlineMs);
    rows = planned.rows;
    if (planned.done) {
      return planOutput(
        sourceId,
        round,
        parentExecutionId,
        rows[0]?.chainMode ?? 'single',
        rows,
        [],
        true,
        config,
      );
    }
  } else if (source.status === 'complete') {
    await store.releaseLease({ sourceId, owner });
    return planOutput(
      sourceId,
      round,
      parentExecutionId,
      source.chainMode ?? 'single',
      rows,
      [],
      true,
      config,
    );
  }
  if (source.chainMode === null && source.status !== 'complete') {
    rows = await makePlan(deps, config, source, owner, deadlineMs);
  }
  const head = rows.find((r) => r.chain === 0) ?? source;
  const mode: ChainMode = head.chainMode ?? 'single';
  let open = mode === 'chains' ? rows.filter((r) => !r.rangeDone && r.status !== 'complete') : [head];
  // Every range done but the source not marked complete (a crash between the two): chain 0's
  // step finishes the hand-over.
  if (open.length === 0) open = [head];
  logger.info('plan', {
    sourceId,
    round,
    mode,
    note: head.chainNote,
    chains: open.map((r) => r.chain),
  });
  return planOutput(sourceId, round, parentExecutionId, mode, rows, open, false, config);
}

async function makePlan(
  deps: StepDeps,
  config: StepConfig,
  source: Checkpoint,
  owner: string,
  deadlineMs: number,
): Promise<Checkpoint[]> {
  const { store, clock } = deps;
  const sourceId = source.sourceId;
  const single = (note: string, planRequest?: CreatePlanArgs['planRequest']) =>
    store.createPlan({
      sourceId,
      owner,
      mode: 'single',
      note,
      oldestTs: null,
      ranges: [{ chain: 0, hiTs: null, loTs: null }],
      ...(planRequest ? { planRequest } : {}),
    });

  if (config.chains === 1) return single('one chain requested (CHAINS=1)');
  if (source.cursor !== null || source.pages > 0) {
    return single('the source was started before it had a plan: it goes on with its one chain');
  }

  const pacer = new RequestPacer({ ...source, lastRateLimit: null }, config);
  const shared = store.pacer;
  // Plan runs once per source: wait for a slot as long as the invocation allows. Every request
  // sent on the way (a 429, a passing 5xx) is counted with the plan.
  let requests = 0;
  for (;;) {
    const fetched = await fetchWithRecovery(
      deps,
      config,
      source,
      pacer,
      deadlineMs,
      shared ? { shared } : {},
    );
    requests += fetched.requests;
    if (fetched.kind === 'page')
      return planFromFirstPage(deps, source.sourceId, fetched.result, single, owner, requests);
    if (fetched.kind === 'built-refused') throw fetched.error;
    const notBefore = fetched.notBeforeMs;
    if (notBefore + config.minAttemptMs > deadlineMs - config.writeHeadroomMs) {
      throw new InvocationDeadlineError(
        `Source "${sourceId}": the rate limit allows the planning request only at ${new Date(notBefore).toISOString()}, ` +
          'after this invocation ends. Nothing was lost; the state machine retries the Plan task.',
      );
    }
    await clock.sleep(Math.max(0, notBefore - clock.now()));
  }
}

/**
 * The plan from the first page: how many chains the upstream's latency calls for, and their
 * ranges from the page's span and meta.total; one chain when the page does not tell enough.
 */
async function planFromFirstPage(
  deps: StepDeps,
  sourceId: string,
  result: FetchPageResult,
  single: (note: string, planRequest?: CreatePlanArgs['planRequest']) => Promise<Checkpoint[]>,
  owner: string,
  requests: number,
): Promise<Checkpoint[]> {
  const { store, logger, config } = deps;
  const { page } = result;
  const planRequest = {
    nextRequestAtMs: planNextRequest({
      lastRequestStartMs: result.startedAtMs,
      responseAtMs: result.startedAtMs + result.latencyMs,
      minSpacingMs: config.minSpacingMs,
      rateLimit: result.rateLimit,
      safetyMarginMs: config.safetyMarginMs,
      resetGranularityMs: config.resetGranularityMs,
    }).notBeforeMs,
    rateLimit: result.rateLimit,
    requests,
  };
  const { events } = normalisePage(page.data, { invalidUtf8: page.invalidUtf8 === true });
  const newest = events[0];
  const oldest = events.at(-1);
  const wanted = chainsWanted({
    requested: config.chains,
    latencyMs: result.latencyMs,
    minSpacingMs: config.minSpacingMs,
    rateLimit: result.rateLimit,
  });
  const planned =
    newest && oldest
      ? planRanges(
          {
            newestTs: newest.occurredAtMs,
            oldestOnPageTs: oldest.occurredAtMs,
            events: events.length,
            total: page.total,
            hasMore: page.hasMore,
          },
          wanted.chains,
        )
      : null;
  if (!planned) {
    const why =
      wanted.chains < 2
        ? wanted.why
        : `one chain: the first page does not tell enough to split the data set (${page.hasMore ? 'no meta.total or no span' : 'it is the only page'})`;
    logger.info('planned one chain', { sourceId, why, upstreamLatencyMs: result.latencyMs });
    return single(why, planRequest);
  }
  logger.info('planned chains', {
    sourceId,
    why: wanted.why,
    upstreamLatencyMs: result.latencyMs,
    total: page.total,
    oldest: new Date(planned.oldestTs).toISOString(),
    ranges: planned.ranges.map((r) => ({
      chain: r.chain,
      hi: r.hiTs === null ? null : new Date(r.hiTs).toISOString(),
      lo: r.loTs === null ? null : new Date(r.loTs).toISOString(),
    })),
  });
  return store.createPlan({
    sourceId,
    owner,
    mode: 'chains',
    note: wanted.why,
    oldestTs: planned.oldestTs,
    ranges: planned.ranges,
    planRequest,
  });
}

function planOutput(
  sourceId: string,
  round: number,
  parentExecutionId: string | null,
  mode: ChainMode,
  rows: Checkpoint[],
  open: Checkpoint[],
  done: boolean,
  config: StepConfig,
): PlanOutput {
  const perChainCap = Math.max(1, Math.floor(config.maxIterationsPerExecution / Math.max(1, open.length)));
  return planOutputSchema.parse({
    sourceId,
    done,
    round,
    mode,
    chains: open.map((r) => ({
      sourceId,
      chain: r.chain,
      iteration: 0,
      perChainCap,
      ...(parentExecutionId ? { parentExecutionId } : {}),
    })),
    ...(parentExecutionId ? { parentExecutionId } : {}),
    totals: stepTotals(sourceTotals(rows)),
  });
}

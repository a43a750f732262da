import { afterEach, describe, expect, it } from 'vitest';
import { createDataset } from '#local/simulator/index.ts';
import { decodeCursor } from '#shared/cursor.ts';
import { listChains } from '#shared/db/chains.ts';
import { createDb } from '#shared/db/client.ts';
import { DataSyncError, LeaseHeldError, UpstreamUnavailableError } from '#shared/errors.ts';
import { type PlanOutput, type StepDeps, type StepOutput, ZERO_ID } from '#shared/step/index.ts';
import { sourceTotals } from '#shared/step/totals.ts';
import { stepPage, stepPlan } from '#test/support/step.ts';
import type { SimulatorOptionsInput } from '../../../local/simulator/index.ts';
import { createPipelineFixture, type PipelineFixture, storedInstants } from '../../support/pipeline.ts';

/*
 * Cursor chains through the real step, store, shared pacer and simulator: the Plan task, then
 * every chain driven concurrently as the state machine's Map does, re-planned until the source
 * is complete. Exactness is checked against the simulator's data set, id by id.
 */

const PAGE = 500;
let fx: PipelineFixture | null = null;

afterEach(async () => {
  await fx?.close();
  fx = null;
});

async function fixture(events: number, sim: SimulatorOptionsInput = {}) {
  fx = await createPipelineFixture({ events, ...sim });
  return fx;
}

function depsOf(
  f: PipelineFixture,
  chains: 'auto' | number,
  config: Partial<StepDeps['config']> = {},
): StepDeps {
  return f.deps({ config: { pageSize: PAGE, chains, maxIterationsPerExecution: 1000, ...config } });
}

/** One chain's Map iteration: FetchPage until done or its cap; a transient error is retried, as the state machine's Retry does. */
async function driveChain(deps: StepDeps, executionId: string, item: PlanOutput['chains'][number]) {
  const outs: StepOutput[] = [];
  let state: Record<string, unknown> = { ...item };
  let failures = 0;
  for (;;) {
    let out: StepOutput;
    try {
      out = await stepPage(deps, { executionId, state });
      failures = 0;
    } catch (error) {
      if (!(error instanceof DataSyncError && error.transient) || ++failures > 10) throw error;
      await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    outs.push(out);
    if (out.done || out.iteration >= item.perChainCap) return outs;
    state = out;
    if (out.waitSeconds > 0) await new Promise((r) => setTimeout(r, Math.min(out.waitSeconds * 1000, 200)));
  }
}

/** Plan -> Map (chains at once) -> Replan, until the source is done, as the state machine runs it. */
async function runChains(deps: StepDeps, executionId = 'exec-1', sourceId = 'default') {
  const plans: PlanOutput[] = [];
  for (let round = 0; round < 50; round++) {
    const plan = await stepPlan(deps, {
      executionId,
      action: 'plan',
      state: { sourceId, round: Math.min(round, 1) },
    });
    plans.push(plan);
    if (plan.done) return plans;
    await Promise.all(plan.chains.map((item) => driveChain(deps, executionId, item)));
  }
  throw new Error('the source did not complete in 50 rounds');
}

async function expectExact(f: PipelineFixture, events: number, sim: SimulatorOptionsInput = {}) {
  const stored = await storedInstants(f.sql);
  const dataset = createDataset({ events, seed: 1, ...sim });
  let missing = 0;
  for (let i = 0; i < dataset.total; i++) if (!stored.has(dataset.idAt(i))) missing++;
  expect(missing).toBe(0);
  expect(stored.size).toBe(dataset.total);
  const rows = await listChains(createDb(f.sql), 'default');
  const head = rows.find((r) => r.chain === 0);
  expect(head?.status).toBe('complete');
  // The sum of the chains' inserts is what the table holds: each row was inserted once.
  expect(rows.reduce((n, r) => n + r.eventsInserted, 0)).toBe(dataset.total);
  return rows;
}

/** Instants shared by two or more events, and gaps with no event, from the data set. */
function tiesAndGaps(events: number) {
  const d = createDataset({ events, seed: 1 });
  const ties: number[] = [];
  const gaps: { hi: number; lo: number }[] = [];
  for (let i = 1; i < d.total; i++) {
    const a = d.timestampAt(i - 1);
    const b = d.timestampAt(i);
    if (a === b && ties.at(-1) !== a) ties.push(a);
    if (a - b > 4) gaps.push({ hi: a - 1, lo: b + 2 });
  }
  return { ties, gaps, newest: d.timestampAt(0), oldest: d.timestampAt(d.total - 1) };
}

describe('cursor chains, end to end through the step', () => {
  it('three planned chains read the data set exactly once, every chain doing part of it', async () => {
    const f = await fixture(20_000);
    const deps = depsOf(f, 3);
    const plans = await runChains(deps);
    expect(plans[0]?.mode).toBe('chains');
    expect(plans[0]?.chains.map((c) => c.chain)).toEqual([0, 1, 2]);
    const rows = await expectExact(f, 20_000);
    expect(rows.filter((r) => r.pages > 0).length).toBe(3);
    expect(plans.at(-1)?.done).toBe(true);
    expect(plans.at(-1)?.totals.inserted).toBe(20_000);
  });

  for (const reading of ['by-ts', 'by-ts-id'] as const) {
    it(`boundaries on instants shared by several events lose and double nothing (built cursors read ${reading})`, async () => {
      const events = 20_000;
      const { ties } = tiesAndGaps(events);
      expect(ties.length).toBeGreaterThan(10);
      const f = await fixture(events, { builtCursors: reading });
      const deps = depsOf(f, 3);
      const store = deps.store;
      // The plan by hand: both boundaries on tied instants.
      const b1 = ties[Math.floor(ties.length / 3)] as number;
      const b2 = ties[Math.floor((2 * ties.length) / 3)] as number;
      await store.acquireLease({ sourceId: 'default', owner: 'exec-1', nowMs: Date.now(), ttlMs: 60_000 });
      await store.createPlan({
        sourceId: 'default',
        owner: 'exec-1',
        mode: 'chains',
        note: 'test: boundaries on ties',
        oldestTs: tiesAndGaps(events).oldest,
        ranges: [
          { chain: 0, hiTs: null, loTs: b1 },
          { chain: 1, hiTs: b1, loTs: b2 },
          { chain: 2, hiTs: b2, loTs: null },
        ],
      });
      await runChains(deps);
      await expectExact(f, events);
    });
  }

  it('an empty range ends at its first page and the source is still exact', async () => {
    const events = 20_000;
    const { gaps, oldest } = tiesAndGaps(events);
    const gap = gaps[Math.floor(gaps.length / 2)];
    expect(gap).toBeDefined();
    const f = await fixture(events);
    const deps = depsOf(f, 3);
    await deps.store.acquireLease({ sourceId: 'default', owner: 'exec-1', nowMs: Date.now(), ttlMs: 60_000 });
    await deps.store.createPlan({
      sourceId: 'default',
      owner: 'exec-1',
      mode: 'chains',
      note: 'test: an empty middle range',
      oldestTs: oldest,
      ranges: [
        { chain: 0, hiTs: null, loTs: gap?.hi as number },
        { chain: 1, hiTs: gap?.hi as number, loTs: gap?.lo as number },
        { chain: 2, hiTs: gap?.lo as number, loTs: null },
      ],
    });
    await runChains(deps);
    await expectExact(f, events);
    // Chain 1's first page held only rows of the next range: nothing of its own (it then took
    // over part of another range, as any chain that finishes does).
    const first = f.logs.find((l) => l.fields?.chain === 1 && l.fields?.page !== undefined);
    const page = first?.fields?.page as { received: number } | undefined;
    expect(page?.received).toBeGreaterThan(0);
    expect(first?.fields?.belowRange).toBe(page?.received);
  });

  it('a skewed distribution of timestamps is rebalanced: finished chains take over half of the largest open range', async () => {
    const sim = { timestampSkew: 0.8, skewBursts: 2 };
    const f = await fixture(30_000, sim);
    const deps = depsOf(f, 3);
    await runChains(deps);
    await expectExact(f, 30_000, sim);
    expect(f.logs.some((l) => l.message.startsWith('range done: took over'))).toBe(true);
  });

  for (const mode of ['refuse', 'refuse-502', 'ignore'] as const) {
    it(`falls back to one chain, exactly, when the upstream ${mode === 'ignore' ? 'serves rows outside the range' : `refuses built cursors (${mode})`}`, async () => {
      const f = await fixture(20_000, { builtCursors: mode });
      const deps = depsOf(f, 3);
      const plans = await runChains(deps);
      const rows = await expectExact(f, 20_000);
      const head = rows.find((r) => r.chain === 0);
      expect(head?.chainMode).toBe('fallback');
      expect(head?.chainNote).toMatch(
        mode === 'ignore' ? /outside the requested range/ : /refused a cursor built/,
      );
      expect(plans.at(-1)?.mode).toBe('fallback');
      expect(
        f.logs.some((l) => l.level === 'warn' && l.message === 'falling back to one chain for this source'),
      ).toBe(true);
      // Every request the simulator answered is counted, the refused built cursors' included.
      expect(sourceTotals(rows).requests).toBe(f.sim.stats().requests);
    });
  }

  it('a second execution for the same source is refused while the first holds it', async () => {
    const f = await fixture(20_000);
    const deps = depsOf(f, 3);
    const plan = await stepPlan(deps, {
      executionId: 'exec-1',
      action: 'plan',
      state: { sourceId: 'default' },
    });
    expect(plan.chains.length).toBe(3);
    await expect(
      stepPlan(deps, { executionId: 'exec-2', action: 'plan', state: { sourceId: 'default' } }),
    ).rejects.toBeInstanceOf(LeaseHeldError);
    // Nor can it drive one of the first execution's chains.
    await expect(
      stepPage(deps, { executionId: 'exec-2', state: { sourceId: 'default', chain: 1 } }),
    ).rejects.toBeInstanceOf(LeaseHeldError);
  });

  it('takes a passing 502 on a built cursor for what it is: retried, no fallback', async () => {
    const f = await fixture(20_000);
    const base = depsOf(f, 3);
    // The load balancer's 502 on the first request of every built cursor, then the answer.
    const failed = new Set<number>();
    const deps: StepDeps = {
      ...base,
      upstream: {
        fetchEvents: async (params) => {
          const c = params.cursor ? decodeCursor(params.cursor) : null;
          if (c && c.id === ZERO_ID && !failed.has(c.ts)) {
            failed.add(c.ts);
            throw new UpstreamUnavailableError('502 Bad Gateway from the load balancer', 502);
          }
          return base.upstream.fetchEvents(params);
        },
      },
    };
    const plans = await runChains(deps);
    expect(failed.size).toBeGreaterThanOrEqual(2);
    expect(plans.at(-1)?.mode).toBe('chains');
    const rows = await expectExact(f, 20_000);
    expect(rows.find((r) => r.chain === 0)?.chainMode).toBe('chains');
  });

  it("counts every request sent, the Plan's retried first request and the chains' retries included", async () => {
    const f = await fixture(20_000);
    const base = depsOf(f, 3);
    // A 503 on the Plan's first request and on every built cursor's first request, then the answer.
    let sent = 0;
    let planFailed = false;
    const failed = new Set<number>();
    const deps: StepDeps = {
      ...base,
      upstream: {
        fetchEvents: async (params) => {
          sent++;
          const c = params.cursor ? decodeCursor(params.cursor) : null;
          if (!params.cursor && !planFailed) {
            planFailed = true;
            throw new UpstreamUnavailableError('HTTP 503 from the test', 503);
          }
          if (c && c.id === ZERO_ID && !failed.has(c.ts)) {
            failed.add(c.ts);
            throw new UpstreamUnavailableError('HTTP 503 from the test', 503);
          }
          return base.upstream.fetchEvents(params);
        },
      },
    };
    await runChains(deps);
    const rows = await expectExact(f, 20_000);
    expect(planFailed).toBe(true);
    expect(sourceTotals(rows).requests).toBe(sent);
  });

  it('a chain retried after the last range completed the source ends quietly', async () => {
    const f = await fixture(20_000);
    const deps = depsOf(f, 3);
    await runChains(deps);
    // The Step Functions retry of a chain whose hand-over failed, arriving after the completion.
    const out = await stepPage(deps, {
      executionId: 'exec-1',
      state: { sourceId: 'default', chain: 2, perChainCap: 10 },
    });
    expect(out.done).toBe(true);
    await expectExact(f, 20_000);
  });

  it('a restart after a failed execution takes over the chain rows the failed one still leased', async () => {
    const f = await fixture(20_000);
    const deps = depsOf(f, 3);
    const plan = await stepPlan(deps, {
      executionId: 'exec-1',
      action: 'plan',
      state: { sourceId: 'default' },
    });
    // Every chain reads one page, then the execution dies without freeing anything but the
    // source (what a fatal error in one chain does).
    for (const item of plan.chains) await stepPage(deps, { executionId: 'exec-1', state: { ...item } });
    await deps.store.releaseLease({ sourceId: 'default', owner: 'exec-1' });
    const rows = await listChains(createDb(f.sql), 'default');
    expect(rows.filter((r) => r.leaseOwner === 'exec-1').length).toBe(2);
    await runChains(deps, 'exec-2');
    await expectExact(f, 20_000);
  });

  it('auto plans chains when the upstream is slower than the spacing', async () => {
    // 500-event pages of a 4000 ms/5000-event latency: 400 ms, over the 100 ms spacing.
    const f = await fixture(20_000, { latencyMs: 4000 });
    const deps = depsOf(f, 'auto', { minSpacingMs: 100 });
    const plans = await runChains(deps);
    expect(plans[0]?.mode).toBe('chains');
    expect(plans[0]?.chains.length).toBe(6);
    await expectExact(f, 20_000);
  });

  it('auto plans one chain when the upstream answers within the spacing', async () => {
    const f = await fixture(20_000, { latencyMs: 0 });
    const deps = depsOf(f, 'auto', { minSpacingMs: 100 });
    const plans = await runChains(deps);
    expect(plans[0]?.mode).toBe('single');
    await expectExact(f, 20_000);
  });
});

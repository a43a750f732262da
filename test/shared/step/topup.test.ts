import { afterEach, describe, expect, it } from 'vitest';
import { startSimulator } from '#local/simulator/index.ts';
import { listChains } from '#shared/db/chains.ts';
import { createDb } from '#shared/db/client.ts';
import { createStore } from '#shared/db/store.ts';
import { DataSyncError, LeaseHeldError, UpstreamProtocolError } from '#shared/errors.ts';
import type { Checkpoint, PlanOutput, StepDeps, StepOutput } from '#shared/step/index.ts';
import { createDataSyncClient } from '#shared/upstream/client.ts';
import { stepPage, stepPlan } from '#test/support/step.ts';
import type { SimulatorOptionsInput } from '../../../local/simulator/index.ts';
import { createPipelineFixture, type PipelineFixture, storedInstants } from '../../support/pipeline.ts';

/*
 * Top-ups through the real step, store and simulator: a complete source started again walks
 * from page one down to its high-water mark less the lookback. Exactness is checked id by id and
 * instant by instant against the simulator's grown data set.
 */

let fx: PipelineFixture | null = null;
afterEach(async () => {
  await fx?.close();
  fx = null;
});

/** No response cache: the service's 30 s cache would serve the page one of before the growth. */
async function fixture(events: number, sim: SimulatorOptionsInput = {}) {
  fx = await createPipelineFixture({ events, cacheTtlSeconds: 0, ...sim });
  return fx;
}

function depsOf(f: PipelineFixture, config: Partial<StepDeps['config']> = {}): StepDeps {
  return f.deps({ config: { pageSize: 5000, chains: 1, maxIterationsPerExecution: 1000, ...config } });
}

async function driveChain(deps: StepDeps, executionId: string, item: PlanOutput['chains'][number]) {
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
    if (out.done || out.iteration >= item.perChainCap) return;
    state = out;
    if (out.waitSeconds > 0) await new Promise((r) => setTimeout(r, Math.min(out.waitSeconds * 1000, 200)));
  }
}

/** One execution: Plan -> Map -> Replan until done, as the state machine runs it. */
async function execution(deps: StepDeps, executionId: string): Promise<PlanOutput[]> {
  const plans: PlanOutput[] = [];
  for (let round = 0; round < 50; round++) {
    const plan = await stepPlan(deps, {
      executionId,
      action: 'plan',
      state: { sourceId: 'default', round: Math.min(round, 1) },
    });
    plans.push(plan);
    if (plan.done) return plans;
    await Promise.all(plan.chains.map((item) => driveChain(deps, executionId, item)));
  }
  throw new Error('the execution did not end in 50 rounds');
}

async function rows(f: PipelineFixture): Promise<Checkpoint[]> {
  return listChains(createDb(f.sql), 'default');
}

const sum = (rs: Checkpoint[], k: 'requests' | 'eventsInserted') => rs.reduce((n, r) => n + r[k], 0);

/** Every event the simulator serves now is stored once, at its exact instant, and nothing else is. */
async function expectExact(f: PipelineFixture) {
  const stored = await storedInstants(f.sql);
  const d = f.sim.dataset;
  let wrong = 0;
  for (let i = 0; i < d.total; i++) if (stored.get(d.idAt(i)) !== d.timestampAt(i)) wrong++;
  expect(wrong).toBe(0);
  expect(stored.size).toBe(d.total);
  const rs = await rows(f);
  expect(rs[0]?.status).toBe('complete');
  expect(sum(rs, 'eventsInserted')).toBe(d.total);
  return rs;
}

describe('top-ups', () => {
  it('stores exactly the M new and K late events in at most ceil((M+K)/5000)+1 requests, and moves the mark to the newest instant', async () => {
    const f = await fixture(12_000);
    const deps = depsOf(f);
    await execution(deps, 'backfill');
    await expectExact(f);
    const before = await rows(f);
    const M = 7_000;
    const K = 40;
    const grown = f.sim.dataset.grow({ newer: M, lateWithin: K, lookbackMs: 600_000 });
    const plans = await execution(deps, 'topup-1');
    const after = await expectExact(f);
    const head = after[0] as Checkpoint;
    expect(sum(after, 'eventsInserted') - sum(before, 'eventsInserted')).toBe(M + K);
    expect(sum(after, 'requests') - sum(before, 'requests')).toBeLessThanOrEqual(
      Math.ceil((M + K) / 5000) + 1,
    );
    expect(head.marks?.hwmTs).toBe(grown.newestMs);
    expect(head.marks?.lastTopupInserted).toBe(M + K);
    expect(head.marks?.topups).toBe(1);
    expect(head.marks?.signpostTs).toBeNull();
    expect(after.every((r) => r.marks?.floorTs === null)).toBe(true);
    expect(plans.at(-1)?.done).toBe(true);
    expect(f.logs.some((l) => l.message === 'top-up planned')).toBe(true);
  });

  it('a rerun with nothing new costs one request and stores nothing, ending in the Plan task', async () => {
    const f = await fixture(8_000);
    const deps = depsOf(f);
    await execution(deps, 'backfill');
    const before = await rows(f);
    const plans = await execution(deps, 'topup-1');
    const after = await expectExact(f);
    expect(plans).toHaveLength(1);
    expect(plans[0]?.done).toBe(true);
    expect(sum(after, 'requests') - sum(before, 'requests')).toBe(1);
    expect(sum(after, 'eventsInserted')).toBe(sum(before, 'eventsInserted'));
    expect(after[0]?.marks?.lastTopupInserted).toBe(0);
    // The mark of a source completed before it had one is its newest stored event.
    expect(after[0]?.marks?.hwmTs).toBe(f.sim.dataset.timestampAt(0));
  });

  it("rows at the mark's own instant that arrive later are stored once, with a lookback of 0", async () => {
    const f = await fixture(6_000);
    const deps = depsOf(f, { lookbackMs: 0 });
    await execution(deps, 'backfill');
    const mark = f.sim.dataset.timestampAt(0);
    // A growth's first event arrives at the newest instant itself: a tie at the mark.
    f.sim.dataset.grow({ newer: 1 });
    expect(f.sim.dataset.timestampAt(0)).toBe(mark);
    expect(f.sim.dataset.timestampAt(1)).toBe(mark);
    await execution(deps, 'topup-1');
    await expectExact(f);
    f.sim.dataset.grow({ newer: 3 });
    await execution(deps, 'topup-2');
    const rs = await expectExact(f);
    expect(rs[0]?.marks?.topups).toBe(2);
  });

  it('late events beyond the lookback are stored and counted, not dropped', async () => {
    const f = await fixture(50_000);
    const deps = depsOf(f, { lookbackMs: 60_000 });
    await execution(deps, 'backfill');
    f.sim.dataset.grow({ newer: 500, lateWithin: 10, lateBeyond: 25, lookbackMs: 60_000 });
    await execution(deps, 'topup-1');
    const rs = await expectExact(f);
    expect(rs.reduce((n, r) => n + (r.marks?.lateBeyondLookback ?? 0), 0)).toBe(25);
    expect(rs[0]?.marks?.lastTopupInserted).toBe(535);
  });

  it('an upstream whose newest instant is older than the mark stops the top-up with both instants named', async () => {
    const f = await fixture(6_000);
    const deps = depsOf(f);
    await execution(deps, 'backfill');
    f.sim.dataset.grow({ newer: 100 });
    await execution(deps, 'topup-1');
    const mark = (await rows(f))[0]?.marks?.hwmTs as number;
    // The same data set without its growth: a service that was reset.
    const reset = await startSimulator({
      port: 0,
      rateLimit: 0,
      latencyMs: 0,
      cacheTtlSeconds: 0,
      events: 6_000,
    });
    try {
      const upstream = createDataSyncClient({
        baseUrl: reset.url,
        apiKey: reset.options.apiKey,
        timeoutMs: 10_000,
      });
      const resetDeps = { ...deps, upstream, store: createStore(f.sql) };
      const error = await execution(resetDeps, 'topup-2').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UpstreamProtocolError);
      const message = (error as Error).message;
      expect(message).toContain(new Date(mark).toISOString());
      expect(message).toContain(new Date(reset.dataset.timestampAt(0)).toISOString());
      expect(message).toContain('shrank or was reset');
      // Nothing changed: the source is still complete at its mark, and its lease is free.
      const rs = await rows(f);
      expect(rs[0]?.status).toBe('complete');
      expect(rs[0]?.marks?.hwmTs).toBe(mark);
      expect(rs[0]?.leaseOwner).toBeNull();
    } finally {
      await reset.close();
    }
  });

  it('a gap of many pages is planned as chains like a backfill, and read exactly', async () => {
    const f = await fixture(5_000);
    const deps = depsOf(f, { pageSize: 500, chains: 3 });
    await execution(deps, 'backfill');
    f.sim.dataset.grow({ newer: 12_000, lateWithin: 20 });
    const plans = await execution(deps, 'topup-1');
    expect(plans[0]?.mode).toBe('chains');
    expect(plans[0]?.chains.map((c) => c.chain)).toEqual([0, 1, 2]);
    const rs = await expectExact(f);
    expect(rs.filter((r) => r.chain > 0 && r.pages > 0).length).toBeGreaterThan(0);
    expect(rs[0]?.marks?.lastTopupInserted).toBe(12_020);
  });

  it('a gap planned as chains against an upstream that refuses built cursors falls back to one chain down to the floor', async () => {
    const f = await fixture(5_000, { builtCursors: 'refuse' });
    await execution(depsOf(f, { pageSize: 500, chains: 1 }), 'backfill');
    const before = await rows(f);
    f.sim.dataset.grow({ newer: 6_000 });
    const plans = await execution(depsOf(f, { pageSize: 500, chains: 3 }), 'topup-1');
    expect(plans[0]?.mode).toBe('chains');
    const rs = await expectExact(f);
    expect(rs[0]?.chainMode).toBe('fallback');
    // One chain from its contiguous position down to the floor, not to the end of the data.
    const pages = rs.reduce((n, r) => n + r.pages, 0) - before.reduce((n, r) => n + r.pages, 0);
    expect(pages).toBeLessThanOrEqual(Math.ceil(6_000 / 500) + 2);
  });

  it('a scheduled start that finds the source being read ends quietly; a start by hand is refused', async () => {
    const f = await fixture(6_000);
    const deps = depsOf(f);
    await execution(deps, 'backfill');
    f.sim.dataset.grow({ newer: 9_000 });
    // A top-up in flight: its Plan stored page one and left chain 0 running.
    const first = await stepPlan(deps, {
      executionId: 'running',
      action: 'plan',
      state: { sourceId: 'default' },
    });
    expect(first.done).toBe(false);
    const scheduled = await stepPlan(deps, {
      executionId: 'scheduled',
      action: 'plan',
      state: { sourceId: 'default', ifRunning: 'skip' },
    });
    expect(scheduled).toMatchObject({ done: true, skipped: 'already-running', chains: [] });
    await expect(
      stepPlan(deps, { executionId: 'by-hand', action: 'plan', state: { sourceId: 'default' } }),
    ).rejects.toThrow(LeaseHeldError);
    // The running top-up is untouched and finishes exact.
    await Promise.all(first.chains.map((item) => driveChain(deps, 'running', item)));
    await execution(deps, 'running');
    await expectExact(f);
  });
});

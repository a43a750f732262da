import { describe, expect, it } from 'vitest';
import { synthesizeDefinition } from '#infra/definition.ts';
import { FATAL_ERRORS } from '#infra/state-machine.ts';
import {
  type ChainItem,
  type FunctionOutput,
  invocationLane,
  OverrunningInvocationError,
  type PlanStepOutput,
  runExecutions,
  SandboxTimedoutError,
  ScaledChainWaits,
  withFunctionTimeout,
} from '#local/run/executor.ts';
import type { StepOutput } from '#shared/step/index.ts';

// The local runner enforces the function timeout as Lambda does: an invocation that overruns
// fails the task with Sandbox.Timedout, which the state machine's retriers can name.
const done = { waitSeconds: 0 } as unknown as StepOutput;
const never = () => new Promise<StepOutput>(() => {});

function oneTask(retry: boolean): Record<string, unknown> {
  return {
    StartAt: 'FetchPage',
    States: {
      FetchPage: {
        Type: 'Task',
        Resource: 'arn:aws:lambda:us-east-1:000000000000:function:fetch-page',
        TimeoutSeconds: 90,
        ...(retry
          ? { Retry: [{ ErrorEquals: ['Sandbox.Timedout'], IntervalSeconds: 1, MaxAttempts: 2 }] }
          : {}),
        End: true,
      },
    },
  };
}

describe('the function timeout, locally', () => {
  it('fails an invocation that outlives the timeout with Sandbox.Timedout', async () => {
    const timed = withFunctionTimeout(never, 50);
    const error = await timed({}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SandboxTimedoutError);
    expect((error as Error).name).toBe('Sandbox.Timedout');
    expect((error as Error).message).toContain('0.05 seconds (the function timeout)');
  });

  it('lets an invocation within the timeout return its output', async () => {
    const timed = withFunctionTimeout(async () => done, 5_000);
    await expect(timed({})).resolves.toBe(done);
  });

  it('starts the next invocation of the same chain only after the one that overran has settled', async () => {
    const events: string[] = [];
    let release!: () => void;
    let calls = 0;
    const handler = (): Promise<StepOutput> => {
      calls++;
      if (calls === 1) {
        events.push('first started');
        return new Promise<StepOutput>((resolve) => {
          release = () => {
            events.push('first settled');
            resolve(done);
          };
        });
      }
      events.push('second started');
      return Promise.resolve(done);
    };
    const timed = withFunctionTimeout(handler, 20);
    await expect(timed({})).rejects.toThrow(SandboxTimedoutError);
    const second = timed({});
    await new Promise((r) => setTimeout(r, 50));
    expect(events).toEqual(['first started']);
    release();
    await expect(second).resolves.toBe(done);
    expect(events).toEqual(['first started', 'first settled', 'second started']);
  });

  it('resets the sandbox of a timed-out invocation, which lets a hung one stop', async () => {
    // A call that waits without end on a client, as a step did on a stuck database connection:
    // only closing the client (what Lambda's kill of the sandbox does) ends it.
    const events: string[] = [];
    let closeClient!: () => void;
    let calls = 0;
    const handler = (): Promise<StepOutput> => {
      calls++;
      if (calls > 1) {
        events.push('second started');
        return Promise.resolve(done);
      }
      events.push('first started');
      return new Promise<StepOutput>((_, reject) => {
        closeClient = () => reject(new Error('CONNECTION_DESTROYED'));
      });
    };
    const reset = async () => {
      events.push('sandbox reset');
      closeClient();
    };
    const timed = withFunctionTimeout(handler, 20, { reset, settleMs: 5_000 });
    await expect(timed({})).rejects.toThrow(SandboxTimedoutError);
    await expect(timed({})).resolves.toBe(done);
    expect(events).toEqual(['first started', 'sandbox reset', 'second started']);
  });

  it('fails the next invocation with OverrunningInvocationError when the timed-out one never stops', async () => {
    let calls = 0;
    const handler = (): Promise<StepOutput> => (++calls === 1 ? never() : Promise.resolve(done));
    const timed = withFunctionTimeout(handler, 20, { reset: async () => {}, settleMs: 50 });
    await expect(timed({})).rejects.toThrow(SandboxTimedoutError);
    const error = await timed({}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OverrunningInvocationError);
    expect((error as Error).name).toBe('OverrunningInvocationError');
    expect((error as Error).message).toMatch(/waits without a bound/);
    // No second invocation ran beside the first.
    expect(calls).toBe(1);
  });

  it('retries the page when the state machine names Sandbox.Timedout, as Step Functions would', async () => {
    let calls = 0;
    const handler = async (): Promise<StepOutput> => {
      calls++;
      if (calls === 1) {
        await new Promise((r) => setTimeout(r, 300));
      }
      return done;
    };
    const result = await runExecutions({
      definition: oneTask(true),
      handler,
      input: { sourceId: 'x' },
      timeScale: 1000,
      functionTimeoutMs: 50,
    });
    expect(result).toEqual({ executions: 1, failure: null, interrupted: false });
    expect(calls).toBe(2);
  });

  it('fails the execution with OverrunningInvocationError when the retry would run beside a hung invocation', async () => {
    let calls = 0;
    const result = await runExecutions({
      definition: oneTask(true),
      handler: () => (++calls === 1 ? never() : Promise.resolve(done)),
      input: { sourceId: 'x' },
      timeScale: 1000,
      functionTimeoutMs: 50,
      sandbox: { reset: async () => {}, settleMs: 100 },
    });
    expect(result.failure?.name).toBe('OverrunningInvocationError');
    expect(calls).toBe(1);
  });

  it('fails the execution with Sandbox.Timedout when no retrier names it', async () => {
    const result = await runExecutions({
      definition: oneTask(false),
      handler: () => new Promise<StepOutput>((r) => setTimeout(() => r(done), 300)),
      input: { sourceId: 'x' },
      timeScale: 1000,
      functionTimeoutMs: 50,
    });
    expect(result.failure?.name).toBe('Sandbox.Timedout');
    expect(result.interrupted).toBe(false);
  });
});

describe('invocation lanes', () => {
  it('serialises per chain and plans apart, so chains never wait for one another', async () => {
    expect(invocationLane({ executionId: 'e', state: { sourceId: 's', chain: 2 } })).toBe('s/chain-2');
    expect(invocationLane({ executionId: 'e', state: { sourceId: 's' } })).toBe('s/chain-0');
    expect(invocationLane({ executionId: 'e', action: 'plan', state: { sourceId: 's', chain: 2 } })).toBe(
      's/plan',
    );
    const started: string[] = [];
    let release!: () => void;
    const handler = (payload: unknown): Promise<StepOutput> => {
      const lane = invocationLane(payload);
      started.push(lane);
      if (started.length === 1) {
        return new Promise<StepOutput>((resolve) => {
          release = () => resolve(done);
        });
      }
      return Promise.resolve(done);
    };
    const timed = withFunctionTimeout(handler, 20);
    const page = (chain: number) => ({ executionId: 'e', state: { sourceId: 's', chain } });
    await expect(timed(page(0))).rejects.toThrow(SandboxTimedoutError);
    // Chain 1 and the plan go on while chain 0's overrunning invocation still runs...
    await expect(timed(page(1))).resolves.toBe(done);
    await expect(timed({ executionId: 'e', action: 'plan', state: { sourceId: 's' } })).resolves.toBe(done);
    // ...chain 0's next one waits for it.
    const again = timed(page(0));
    await new Promise((r) => setTimeout(r, 50));
    expect(started).toEqual(['s/chain-0', 's/chain-1', 's/plan']);
    release();
    await expect(again).resolves.toBe(done);
    expect(started).toEqual(['s/chain-0', 's/chain-1', 's/plan', 's/chain-0']);
  });
});

describe('scaled waits per chain', () => {
  const payloadAfterWait = (waitSeconds: number) => ({
    executionId: 'e',
    state: { sourceId: 's', waitSeconds },
  });

  it("owes each chain its own step's wait, consumed once, never a chain's first page", () => {
    const waits = new ScaledChainWaits(20, 10_000);
    waits.stepDone('s/chain-0', { waitSeconds: 4 });
    waits.stepDone('s/chain-1', { waitSeconds: 1 });
    expect(waits.take('s/chain-1', payloadAfterWait(1))).toBe(50);
    expect(waits.take('s/chain-0', payloadAfterWait(4))).toBe(200);
    // A retry of the same payload: the Wait was already waited.
    expect(waits.take('s/chain-0', payloadAfterWait(4))).toBe(0);
    // A chain's first page in a new round starts from its Map item: no wait, and none left over.
    waits.stepDone('s/chain-0', { waitSeconds: 4 });
    expect(waits.take('s/chain-0', { executionId: 'e', state: { sourceId: 's', iteration: 0 } })).toBe(0);
    expect(waits.take('s/chain-0', payloadAfterWait(4))).toBe(0);
  });

  it('keeps wait plus function within the task timeout (the step re-checks what is due)', () => {
    const waits = new ScaledChainWaits(2, 29_000);
    waits.stepDone('s/chain-0', { waitSeconds: 120 });
    expect(waits.take('s/chain-0', payloadAfterWait(120))).toBe(29_000);
  });
});

/**
 * The deployed definition run locally with a fake function: Plan gives `chains` (one per entry:
 * the pages before the chain is done, and the wait each page asks for), capped per chain; the
 * second Plan of an execution (round 1) continues as new unless every chain is done.
 */
describe('chains through the synthesized definition', () => {
  const definition = synthesizeDefinition();

  interface ChainSpec {
    pages: number;
    waitSeconds: number;
  }

  function fakeFunction(specs: ChainSpec[], perChainCap: number) {
    const pagesDone = specs.map(() => 0);
    const log: {
      kind: 'plan' | 'page';
      executionId: string;
      chain?: number;
      state: Record<string, unknown>;
    }[] = [];
    let active = 0;
    let maxActive = 0;
    let barrier: { count: number; open: () => void; opened: Promise<void> } | null = null;
    const handler = async (payload: unknown): Promise<FunctionOutput> => {
      const p = payload as { executionId: string; action?: string; state: Record<string, unknown> };
      const sourceId = String(p.state.sourceId ?? 'default');
      if (p.action === 'plan') {
        log.push({ kind: 'plan', executionId: p.executionId, state: p.state });
        const open = specs.map((_, c) => c).filter((c) => pagesDone[c]! < specs[c]!.pages);
        const chains: ChainItem[] = open.map((chain) => ({
          sourceId,
          chain,
          iteration: 0,
          perChainCap,
          ...(p.state.parentExecutionId ? { parentExecutionId: p.state.parentExecutionId as string } : {}),
        }));
        const out: PlanStepOutput = {
          sourceId,
          done: open.length === 0,
          round: Number(p.state.round ?? 0),
          chains,
        };
        return out;
      }
      const chain = Number(p.state.chain);
      log.push({ kind: 'page', executionId: p.executionId, chain, state: p.state });
      active++;
      maxActive = Math.max(maxActive, active);
      if (barrier) {
        barrier.count--;
        if (barrier.count === 0) barrier.open();
        await barrier.opened;
      }
      // Answers settle in one microtask drain, as concurrent ones can: the chains' steps and
      // waits interleave, so a wait taken from whichever step ended last would be caught.
      await Promise.resolve();
      active--;
      pagesDone[chain]!++;
      const finished = pagesDone[chain]! >= specs[chain]!.pages;
      return {
        sourceId,
        chain,
        done: finished,
        waitSeconds: finished ? 0 : specs[chain]!.waitSeconds,
        iteration: Number(p.state.iteration) + 1,
        perChainCap: p.state.perChainCap,
        nextCursor: null,
        page: { received: 1, inserted: 1, duplicates: 0, rejected: 0 },
        totals: { pages: 1, inserted: 1, duplicates: 0, rejected: 0 },
      } as unknown as StepOutput;
    };
    const awaitAllAtOnce = (count: number) => {
      let open!: () => void;
      const opened = new Promise<void>((r) => {
        open = r;
      });
      barrier = { count, open, opened };
    };
    return { handler, log, pagesDone, maxActive: () => maxActive, awaitAllAtOnce };
  }

  /** Records each chain's scaled wait; each resolves at once unless a test holds it. */
  function recordingSleep() {
    const sleeps: number[] = [];
    const held = new Map<number, () => void>();
    let holdMs: number | null = null;
    const sleep = (ms: number) => {
      sleeps.push(ms);
      if (holdMs !== null && ms === holdMs) {
        holdMs = null;
        return new Promise<void>((resolve) => held.set(ms, resolve));
      }
      return Promise.resolve();
    };
    return {
      sleep,
      sleeps,
      holdNext: (ms: number) => {
        holdMs = ms;
      },
      release: (ms: number) => held.get(ms)?.(),
    };
  }

  it('runs the planned chains at once, each waiting its own scaled wait before its next page', async () => {
    const specs = [
      { pages: 3, waitSeconds: 2 },
      { pages: 4, waitSeconds: 10 },
      { pages: 2, waitSeconds: 6 },
    ];
    const fn = fakeFunction(specs, 100);
    // The first pages of the three chains must all be in flight together before any returns:
    // serialised chains would never get there.
    fn.awaitAllAtOnce(3);
    const clock = recordingSleep();
    const pages: number[] = [];
    const result = await runExecutions({
      definition,
      handler: fn.handler,
      input: { sourceId: 'default' },
      timeScale: 20,
      sleep: clock.sleep,
      onStep: (out) => pages.push((out as StepOutput & { chain: number }).chain),
    });
    expect(result).toEqual({ executions: 1, failure: null, interrupted: false });
    expect(fn.maxActive()).toBe(3);
    expect(fn.pagesDone).toEqual([3, 4, 2]);
    expect(pages.sort()).toEqual([0, 0, 0, 1, 1, 1, 1, 2, 2]);
    // A wait before every page but each chain's first: (3-1) x 2 s, (4-1) x 10 s, (2-1) x 6 s, / 20.
    expect(clock.sleeps.sort((a, b) => a - b)).toEqual([100, 100, 300, 500, 500, 500]);
    // Each wait went with its own chain: every page after the first carries its chain's wait.
    for (const entry of fn.log.filter((l) => l.kind === 'page' && l.state.iteration !== 0)) {
      expect(entry.state.waitSeconds).toBe(specs[entry.chain!]!.waitSeconds);
    }
    // Plan, the chains, then Replan -> Plan (round 1), which finds every chain done.
    const plans = fn.log.filter((l) => l.kind === 'plan').map((l) => l.state.round ?? 0);
    expect(plans).toEqual([0, 1]);
  });

  it("holds back only the waiting chain: the others page on while one chain's wait runs", async () => {
    const specs = [
      { pages: 2, waitSeconds: 40 },
      { pages: 5, waitSeconds: 1 },
    ];
    const fn = fakeFunction(specs, 100);
    const clock = recordingSleep();
    clock.holdNext(2000); // chain 0's 40 s wait at scale 20
    const run = runExecutions({
      definition,
      handler: fn.handler,
      input: { sourceId: 'default' },
      timeScale: 20,
      sleep: clock.sleep,
    });
    while (fn.pagesDone[1]! < 5) await new Promise((r) => setTimeout(r, 5));
    // Chain 1 finished its five pages while chain 0 still owes its wait.
    expect(fn.pagesDone).toEqual([1, 5]);
    clock.release(2000);
    await expect(run).resolves.toEqual({ executions: 1, failure: null, interrupted: false });
    expect(fn.pagesDone).toEqual([2, 5]);
  });

  it('pauses each chain at its cap, replans, and continues as a new execution that resumes the chains', async () => {
    const specs = [
      { pages: 3, waitSeconds: 1 },
      { pages: 5, waitSeconds: 1 },
    ];
    const fn = fakeFunction(specs, 2);
    const result = await runExecutions({
      definition,
      handler: fn.handler,
      input: { sourceId: 'default' },
      timeScale: 20,
      sleep: async () => {},
    });
    // Execution 1: pages 2 + 2, paused. Execution 2: 1 + 2 (chain 0 done), paused. Execution 3: 1.
    expect(result).toEqual({ executions: 3, failure: null, interrupted: false });
    expect(fn.pagesDone).toEqual([3, 5]);
    const byExecution = new Map<string, typeof fn.log>();
    for (const entry of fn.log)
      byExecution.set(entry.executionId, [...(byExecution.get(entry.executionId) ?? []), entry]);
    const executions = [...byExecution.entries()];
    expect(executions).toHaveLength(3);
    const shape = executions.map(([, entries]) =>
      entries.map((e) => (e.kind === 'plan' ? `plan${e.state.round ?? 0}` : `c${e.chain}`)).sort(),
    );
    expect(shape).toEqual([
      ['c0', 'c0', 'c1', 'c1', 'plan0', 'plan1'],
      ['c0', 'c1', 'c1', 'plan0', 'plan1'],
      ['c1', 'plan0', 'plan1'],
    ]);
    // No chain exceeds its cap within one execution (the history budget Plan divided).
    for (const [, entries] of executions) {
      for (const chain of [0, 1]) {
        expect(entries.filter((e) => e.chain === chain).length).toBeLessThanOrEqual(2);
      }
    }
    // Each child hands over from its parent: the first Plan and every chain's first page say so.
    for (let i = 1; i < executions.length; i++) {
      const [, entries] = executions[i]!;
      const parent = executions[i - 1]![0];
      expect(entries[0]).toMatchObject({ kind: 'plan', state: { parentExecutionId: parent } });
      for (const first of entries.filter((e) => e.kind === 'page' && e.state.iteration === 0)) {
        expect(first.state.parentExecutionId).toBe(parent);
      }
    }
  });

  it('runs a single chain the same way, to the end of the source', async () => {
    const fn = fakeFunction([{ pages: 4, waitSeconds: 3 }], 1000);
    const clock = recordingSleep();
    const steps: StepOutput[] = [];
    const plans: PlanStepOutput[] = [];
    const result = await runExecutions({
      definition,
      handler: fn.handler,
      input: { sourceId: 'default' },
      timeScale: 10,
      sleep: clock.sleep,
      onStep: (out) => steps.push(out),
      onPlan: (out) => plans.push(out),
    });
    expect(result).toEqual({ executions: 1, failure: null, interrupted: false });
    expect(steps.map((s) => [s.iteration, s.done])).toEqual([
      [1, false],
      [2, false],
      [3, false],
      [4, true],
    ]);
    expect(clock.sleeps).toEqual([300, 300, 300]);
    expect(plans.map((p) => [p.round, p.done, p.chains.length])).toEqual([
      [0, false, 1],
      [1, true, 0],
    ]);
  });

  it("fails the execution with a chain's fatal error, name and message kept", async () => {
    const fn = fakeFunction(
      [
        { pages: 50, waitSeconds: 1 },
        { pages: 50, waitSeconds: 1 },
      ],
      100,
    );
    const fatal = FATAL_ERRORS[0]!;
    let pages = 0;
    const result = await runExecutions({
      definition,
      handler: async (payload) => {
        const p = payload as { action?: string; state: { chain?: number } };
        if (p.action !== 'plan' && p.state.chain === 1 && ++pages === 3) {
          throw Object.assign(new Error('the key was revoked'), { name: fatal });
        }
        return fn.handler(payload);
      },
      input: { sourceId: 'default' },
      timeScale: 20,
      sleep: async () => {},
    });
    expect(result.failure).toEqual({ name: fatal, message: 'the key was revoked' });
    expect(result.executions).toBe(1);
  });

  it("stops on the signal with every chain's in-flight page finished", async () => {
    const specs = [
      { pages: 1000, waitSeconds: 1 },
      { pages: 1000, waitSeconds: 1 },
    ];
    const fn = fakeFunction(specs, 1000);
    const controller = new AbortController();
    const result = await runExecutions({
      definition,
      handler: async (payload) => {
        const out = await fn.handler(payload);
        if (fn.pagesDone[0]! + fn.pagesDone[1]! === 6) controller.abort();
        return out;
      },
      input: { sourceId: 'default' },
      timeScale: 20,
      signal: controller.signal,
      sleep: async () => {},
    });
    expect(result).toEqual({ executions: 1, failure: null, interrupted: true });
    const started = fn.log.filter((l) => l.kind === 'page').length;
    expect(fn.pagesDone[0]! + fn.pagesDone[1]!).toBe(started);
  });
});

import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { ExecutionError, StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import {
  CONTINUE_AS_NEW_STATE,
  FETCH_PAGE_STATE,
  FUNCTION_TASK_STATES,
  PLAN_STATE,
  WAIT_STATE,
} from '#infra/state-machine.ts';
import { FETCH_PAGE_TIMEOUT_MS } from '#shared/config.ts';
import type { ChainItem, PlanOutput, StepOutput } from '#shared/step/index.ts';
import './node20.ts';

/** The fetch-page function's timeout, the one the stack gives it. */
export const FUNCTION_TIMEOUT_MS = FETCH_PAGE_TIMEOUT_MS;

/**
 * What Step Functions reports when the function outlives its timeout. Lambda kills the sandbox;
 * the task fails with this name, and only a retrier that names it retries the page.
 */
export class SandboxTimedoutError extends Error {
  override readonly name = 'Sandbox.Timedout';
}

/** One Map item as Plan builds it: the whole input of a chain's first FetchPage. */
export type { ChainItem };

/** Plan's output as far as the state machine and this module read it. */
export type PlanStepOutput = Pick<PlanOutput, 'sourceId' | 'done' | 'round' | 'chains'>;

/** What one invocation returns: a page of one chain (FetchPage), or the plan (Plan). */
export type FunctionOutput = StepOutput | PlanStepOutput;

/** The fetch-page function in-process: the Plan and FetchPage tasks both invoke it. */
export type StepHandler = (payload: unknown) => Promise<FunctionOutput>;

/** The state of an invocation payload `{executionId, action?, state}`, as far as it is read here. */
function payloadParts(payload: unknown): { action: unknown; state: Record<string, unknown> } {
  const p = (payload ?? {}) as { action?: unknown; state?: unknown };
  const state = p.state && typeof p.state === 'object' ? (p.state as Record<string, unknown>) : {};
  return { action: p.action, state };
}

/**
 * Which invocations must not overlap: one chain's (each owns its checkpoint row and lease) and
 * Plan's. Chains run side by side, as their Map iterations do in the cloud.
 */
export function invocationLane(payload: unknown): string {
  const { action, state } = payloadParts(payload);
  const source = typeof state.sourceId === 'string' ? state.sourceId : 'default';
  if (action === 'plan') return `${source}/plan`;
  return `${source}/chain-${typeof state.chain === 'number' ? state.chain : 0}`;
}

/**
 * An invocation outlived its timeout and still had not stopped after its sandbox was reset. Lambda
 * would have killed it; in-process it keeps running, so no further invocation is started beside
 * it and the execution fails with this error instead of waiting for it without end.
 */
export class OverrunningInvocationError extends Error {
  override readonly name = 'OverrunningInvocationError';
}

export interface SandboxOptions {
  /**
   * What Lambda does to the sandbox of a timed-out invocation, as far as it can be done
   * in-process: close what the handler holds (its database connection), so the invocation's
   * pending calls fail, and the next invocation starts cold with new clients.
   */
  reset?: () => Promise<void>;
  /** How long, from the timeout, the next invocation waits for the overrunning one to stop. @default 20_000 */
  settleMs?: number;
}

/**
 * The function as Lambda runs it: an invocation that outlives `timeoutMs` fails with
 * `Sandbox.Timedout`, and its sandbox is reset (`sandbox.reset`). In-process the invocation itself
 * cannot be killed, so the next invocation in the same lane (`laneOf`: the same chain, or Plan)
 * first waits for it to stop (two invocations never touch one checkpoint row at once; the other
 * chains go on meanwhile), at most `sandbox.settleMs`: one that does not stop by then fails the
 * next invocation of its lane with OverrunningInvocationError, which names the wait, instead of
 * stalling the run. The reset closes the handler's clients, which every chain shares in-process:
 * their steps in flight fail with a transient database error and are retried.
 */
export function withFunctionTimeout<O>(
  handler: (payload: unknown) => Promise<O>,
  timeoutMs: number,
  sandbox: SandboxOptions = {},
  laneOf: (payload: unknown) => string = invocationLane,
): (payload: unknown) => Promise<O> {
  const settleMs = sandbox.settleMs ?? 20_000;
  const overrunning = new Map<string, Promise<void>>();
  return async (payload) => {
    const lane = laneOf(payload);
    await overrunning.get(lane);
    const invocation = handler(payload);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // First the timeout, then the reset: the reset makes the invocation fail too, and the
        // task must fail as Lambda reports it, with Sandbox.Timedout.
        reject(
          new SandboxTimedoutError(
            `Task timed out after ${(timeoutMs / 1000).toFixed(2)} seconds (the function timeout)`,
          ),
        );
        const stop = stopped(invocation, sandbox.reset, timeoutMs, settleMs);
        overrunning.set(lane, stop);
        // The next invocation of the lane reports a failure; until then it must not count as
        // unhandled. A lane whose invocation stopped is free again.
        stop.then(
          () => {
            if (overrunning.get(lane) === stop) overrunning.delete(lane);
          },
          () => undefined,
        );
      }, timeoutMs);
    });
    try {
      return await Promise.race([invocation, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  };
}

/** Resolves once the timed-out invocation has settled and its sandbox is reset; rejects after settleMs. */
async function stopped(
  invocation: Promise<unknown>,
  reset: (() => Promise<void>) | undefined,
  timeoutMs: number,
  settleMs: number,
): Promise<void> {
  const settled = Promise.all([invocation.catch(() => undefined), reset?.().catch(() => undefined)]);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), settleMs);
  });
  try {
    if ((await Promise.race([settled.then(() => true), late])) === false) {
      throw new OverrunningInvocationError(
        `A fetch-page invocation outlived its ${(timeoutMs / 1000).toFixed(0)} s function timeout and had not stopped ` +
          `${(settleMs / 1000).toFixed(0)} s later, although its sandbox was reset (its database connection closed): ` +
          'something in the step waits without a bound. Lambda would have killed it; a local run cannot, and starts no ' +
          "invocation beside it. The run's log names the last step it started. Fix that wait, then run again: the run " +
          'resumes from the checkpoint.',
      );
    }
  } finally {
    clearTimeout(timer);
  }
}

export interface ExecutorOptions {
  definition: Record<string, unknown>;
  /** The fetch-page function, called for every Plan and FetchPage task. */
  handler: StepHandler;
  /** The first execution's input. */
  input: Record<string, unknown>;
  timeScale: number;
  /** @default FUNCTION_TIMEOUT_MS */
  functionTimeoutMs?: number;
  /** What a function timeout does to the handler's sandbox (see withFunctionTimeout). */
  sandbox?: SandboxOptions;
  signal?: AbortSignal;
  /** Called after each page step (FetchPage) the function completed, whichever chain it drove. */
  onStep?: (out: StepOutput) => void;
  /** Called after each Plan the function completed. */
  onPlan?: (out: PlanStepOutput) => void;
  /**
   * How a chain sleeps its time-scaled wait (resolves early when the signal aborts).
   * @default real timers
   */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export interface ExecutorResult {
  executions: number;
  failure: { name: string; message: string } | null;
  interrupted: boolean;
}

const STATE_MACHINE_ARN = 'arn:aws:states:local:000000000000:stateMachine:datasync-ingest';

/** A state by name anywhere in the definition, Map iterations included. */
function findState(graph: unknown, name: string): Record<string, unknown> | undefined {
  const states = (graph as { States?: Record<string, Record<string, unknown>> }).States ?? {};
  if (states[name]) return states[name];
  for (const state of Object.values(states)) {
    const inner = state.ItemProcessor ?? state.Iterator;
    const found = inner ? findState(inner, name) : undefined;
    if (found) return found;
  }
  return undefined;
}

function realSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Time-scaled Wait states. The interpreter's wait override is one number per state name, read
 * with no input, and every chain's Map iteration shares the one Wait state: a value set by the
 * last step would give chain A the wait chain B asked for. So on a scaled run the Wait itself
 * takes 0 ms and each chain waits its own step's `waitSeconds / timeScale` just before its next
 * FetchPage, outside the function timeout. Only a payload that came through the Wait carries
 * `waitSeconds` (a chain's first page starts from its Map item), and a retry of that payload
 * finds the wait already consumed, as a retried task after a Wait would in Step Functions.
 */
export class ScaledChainWaits {
  private readonly pending = new Map<string, number>();

  constructor(
    private readonly timeScale: number,
    /** Longest wait done this way, so wait + function stay within the task's TimeoutSeconds. */
    private readonly maxWaitMs: number,
  ) {}

  /** Records the wait the step asked for after its page. */
  stepDone(lane: string, out: { waitSeconds?: unknown }): void {
    const seconds = typeof out.waitSeconds === 'number' ? out.waitSeconds : 0;
    this.pending.set(lane, Math.ceil((seconds * 1000) / this.timeScale));
  }

  /** The wait owed before this invocation, in milliseconds (0 when none), consumed by the call. */
  take(lane: string, payload: unknown): number {
    const owed = this.pending.get(lane);
    this.pending.delete(lane);
    if (owed === undefined || !('waitSeconds' in payloadParts(payload).state)) return 0;
    // A shortened wait is safe: the step finds its request not yet due and asks to wait again.
    return Math.min(owed, this.maxWaitMs);
  }
}

/**
 * Runs the state machine as Step Functions would: the first execution, then one per
 * continue-as-new, each with a fresh history, until one succeeds without a child, fails, or the
 * signal aborts it (the in-flight steps are awaited, so no checkpoint is left mid-page). Plan and
 * FetchPage both go to the one in-process handler; the Map runs the chains concurrently.
 */
export async function runExecutions(opts: ExecutorOptions): Promise<ExecutorResult> {
  const functionTimeoutMs = opts.functionTimeoutMs ?? FUNCTION_TIMEOUT_MS;
  const invoke = withFunctionTimeout(opts.handler, functionTimeoutMs, opts.sandbox);
  const taskTimeoutSeconds = Number(findState(opts.definition, FETCH_PAGE_STATE)?.TimeoutSeconds ?? 60);
  const scaled = opts.timeScale !== 1;
  const sleep = opts.sleep ?? realSleep;
  const waits = new ScaledChainWaits(
    opts.timeScale,
    Math.max(0, taskTimeoutSeconds * 1000 - functionTimeoutMs - 1000),
  );
  let input: Record<string, unknown> | null = opts.input;
  let executions = 0;
  let failure: ExecutorResult['failure'] = null;
  let interrupted = false;
  const inFlight = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    const settled = p.catch(() => undefined);
    inFlight.add(settled);
    void settled.then(() => inFlight.delete(settled));
    return p;
  };

  while (input) {
    executions++;
    const executionId = `local:${hostname()}:${process.pid}:${randomUUID()}`;
    let child: Record<string, unknown> | null = null;
    const sm = new StateMachine(opts.definition as unknown as StateMachineDefinition, {
      validationOptions: { checkArn: false },
    });
    const execution = sm.run(structuredClone(input) as never, {
      context: {
        Execution: {
          Id: executionId,
          Name: executionId.split(':').pop(),
          Input: input as never,
          StartTime: new Date().toISOString(),
        },
        StateMachine: { Id: STATE_MACHINE_ARN, Name: 'datasync-ingest' },
      },
      overrides: {
        taskResourceLocalHandlers: {
          [PLAN_STATE]: async (payload) => {
            const out = (await track(invoke(payload))) as PlanStepOutput;
            opts.onPlan?.(out);
            return out as never;
          },
          [FETCH_PAGE_STATE]: async (payload) => {
            const lane = invocationLane(payload);
            if (scaled) {
              const owed = waits.take(lane, payload);
              if (owed > 0) await sleep(owed, opts.signal);
              if (opts.signal?.aborted) throw new Error('interrupted before the page');
            }
            const out = (await track(invoke(payload))) as StepOutput;
            if (scaled) waits.stepDone(lane, out);
            opts.onStep?.(out);
            return out as never;
          },
          [CONTINUE_AS_NEW_STATE]: async (payload) => {
            const p = payload as { Input?: unknown };
            child = (typeof p.Input === 'string' ? JSON.parse(p.Input) : p.Input) as Record<string, unknown>;
            return {
              ExecutionArn: `${STATE_MACHINE_ARN}:child-${executions + 1}`,
              StartDate: new Date().toISOString(),
            } as never;
          },
        },
        // Waits are real seconds by default; time-scaled runs shorten them by the same factor the
        // simulator uses, per chain (ScaledChainWaits).
        ...(scaled ? { waitTimeOverrides: { [WAIT_STATE]: 0 } } : {}),
        ...(scaled
          ? {
              retryIntervalOverrides: Object.fromEntries(
                FUNCTION_TASK_STATES.map((name) => [name, Math.ceil(2000 / opts.timeScale)]),
              ),
            }
          : {}),
      },
    });
    const onAbort = () => execution.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await execution.result;
    } catch (error) {
      if (opts.signal?.aborted) interrupted = true;
      else failure = describeExecutionError(error);
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      await Promise.all(inFlight);
    }
    if (failure || interrupted) break;
    input = child;
  }
  return { executions, failure, interrupted };
}

export function describeExecutionError(error: unknown): { name: string; message: string } {
  // ExecutionError wraps the state machine's failure; the Fail state keeps the task's error and cause.
  if (error instanceof ExecutionError) {
    const cause = (error as { cause?: unknown }).cause as { name?: string; message?: string } | undefined;
    const text = error.message;
    const m = /Execution has failed with the following error: (.*)/s.exec(text);
    return { name: cause?.name ?? 'ExecutionFailed', message: cause?.message ?? m?.[1] ?? text };
  }
  return error instanceof Error
    ? { name: error.name, message: error.message }
    : { name: 'Error', message: String(error) };
}

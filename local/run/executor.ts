import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { ExecutionError, StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import { CONTINUE_AS_NEW_STATE, FETCH_PAGE_STATE, WAIT_STATE } from '#infra/state-machine.ts';
import { FETCH_PAGE_TIMEOUT_MS } from '#shared/config.ts';
import type { StepOutput } from '#shared/step.ts';
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

/**
 * An invocation outlived its timeout and still had not stopped after its sandbox was reset. Lambda
 * would have killed it; in-process it keeps running, so no further invocation is started beside
 * it and the execution fails with this error instead of waiting for it without end.
 */
export class OverrunningInvocationError extends Error {
  override readonly name = 'OverrunningInvocationError';
}

export type StepHandler = (payload: unknown) => Promise<StepOutput>;

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
 * cannot be killed, so the next invocation first waits for it to stop (two invocations never touch
 * the source at once), at most `sandbox.settleMs`: one that does not stop by then fails the next
 * invocation with OverrunningInvocationError, which names the wait, instead of stalling the run.
 */
export function withFunctionTimeout(
  handler: StepHandler,
  timeoutMs: number,
  sandbox: SandboxOptions = {},
): StepHandler {
  const settleMs = sandbox.settleMs ?? 20_000;
  let overrunning: Promise<void> = Promise.resolve();
  return async (payload) => {
    await overrunning;
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
        overrunning = stopped(invocation, sandbox.reset, timeoutMs, settleMs);
        // The next invocation reports it; until then it must not count as unhandled.
        overrunning.catch(() => undefined);
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
  /** The fetch-page handler, called for every FetchPage task. */
  handler: StepHandler;
  /** The first execution's input. */
  input: Record<string, unknown>;
  timeScale: number;
  /** @default FUNCTION_TIMEOUT_MS */
  functionTimeoutMs?: number;
  /** What a function timeout does to the handler's sandbox (see withFunctionTimeout). */
  sandbox?: SandboxOptions;
  signal?: AbortSignal;
  /** Called after each step the function completed. */
  onStep?: (out: StepOutput) => void;
}

export interface ExecutorResult {
  executions: number;
  failure: { name: string; message: string } | null;
  interrupted: boolean;
}

const STATE_MACHINE_ARN = 'arn:aws:states:local:000000000000:stateMachine:datasync-ingest';

/**
 * Runs the state machine as Step Functions would: the first execution, then one per
 * continue-as-new, each with a fresh history, until one succeeds without a child, fails, or the
 * signal aborts it (the in-flight step is awaited, so the checkpoint is never left mid-page).
 */
export async function runExecutions(opts: ExecutorOptions): Promise<ExecutorResult> {
  const fetchPage = withFunctionTimeout(
    opts.handler,
    opts.functionTimeoutMs ?? FUNCTION_TIMEOUT_MS,
    opts.sandbox,
  );
  let input: Record<string, unknown> | null = opts.input;
  let executions = 0;
  let failure: ExecutorResult['failure'] = null;
  let interrupted = false;
  let lastWaitSeconds = 0;

  while (input) {
    executions++;
    const executionId = `local:${hostname()}:${process.pid}:${randomUUID()}`;
    let child: Record<string, unknown> | null = null;
    const sm = new StateMachine(opts.definition as unknown as StateMachineDefinition, {
      validationOptions: { checkArn: false },
    });
    const waitOverrides: Record<string, number> = {};
    if (opts.timeScale !== 1) {
      // Waits are real seconds by default; time-scaled runs shorten them by the same factor
      // the simulator uses, reading the step's own waitSeconds at the moment the Wait starts.
      Object.defineProperty(waitOverrides, WAIT_STATE, {
        enumerable: true,
        get: () => Math.ceil((lastWaitSeconds * 1000) / opts.timeScale),
      });
    }
    let inFlight: Promise<unknown> = Promise.resolve();
    const execution = sm.run(input as never, {
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
          [FETCH_PAGE_STATE]: async (payload) => {
            const p = fetchPage(payload);
            inFlight = p.catch(() => undefined);
            const out = await p;
            lastWaitSeconds = out.waitSeconds;
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
        waitTimeOverrides: waitOverrides,
        ...(opts.timeScale !== 1
          ? { retryIntervalOverrides: { [FETCH_PAGE_STATE]: Math.ceil(2000 / opts.timeScale) } }
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
      await inFlight;
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

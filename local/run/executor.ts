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

export type StepHandler = (payload: unknown) => Promise<StepOutput>;

/**
 * The function as Lambda runs it: an invocation that outlives `timeoutMs` fails with
 * `Sandbox.Timedout`. Lambda would kill that sandbox; in-process it cannot be killed, so the next
 * invocation first waits for it to settle: two invocations never touch the source at once.
 */
export function withFunctionTimeout(handler: StepHandler, timeoutMs: number): StepHandler {
  let overrunning: Promise<unknown> = Promise.resolve();
  return async (payload) => {
    await overrunning;
    const invocation = handler(payload);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        overrunning = invocation.catch(() => undefined);
        reject(
          new SandboxTimedoutError(
            `Task timed out after ${(timeoutMs / 1000).toFixed(2)} seconds (the function timeout)`,
          ),
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

export interface ExecutorOptions {
  definition: Record<string, unknown>;
  /** The fetch-page handler, called for every FetchPage task. */
  handler: StepHandler;
  /** The first execution's input. */
  input: Record<string, unknown>;
  timeScale: number;
  /** @default FUNCTION_TIMEOUT_MS */
  functionTimeoutMs?: number;
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
  const fetchPage = withFunctionTimeout(opts.handler, opts.functionTimeoutMs ?? FUNCTION_TIMEOUT_MS);
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

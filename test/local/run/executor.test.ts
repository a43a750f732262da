import { describe, expect, it } from 'vitest';
import {
  OverrunningInvocationError,
  runExecutions,
  SandboxTimedoutError,
  withFunctionTimeout,
} from '#local/run/executor.ts';
import type { StepOutput } from '#shared/step.ts';

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

  it('starts the next invocation only after the one that overran has settled', async () => {
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

import { createHash } from 'node:crypto';
import { StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import { describe, expect, it } from 'vitest';
import { synthesizeDefinition } from '#infra/definition.ts';
import { CONTINUE_AS_NEW_STATE, CONTINUED_STATE, FETCH_PAGE_STATE } from '#infra/state-machine.ts';
import { FIXTURE_MIGRATIONS } from './support.ts';
import '#local/run/node20.ts';

const definition = synthesizeDefinition({ migrationsDir: FIXTURE_MIGRATIONS, maxIterationsPerExecution: 1 });

type StartExecution = { StateMachineArn: string; Name: string; Input: Record<string, unknown> };

/**
 * Runs the deployed definition in the interpreter the local runner uses, with one FetchPage that
 * reaches the iteration limit, and returns what ContinueAsNew asked StartExecution for.
 */
async function continueAsNewRequest(
  executionId: string,
  startExecution: (request: StartExecution) => Promise<unknown> = async () => ({}),
) {
  const requests: StartExecution[] = [];
  const sm = new StateMachine(definition as unknown as StateMachineDefinition, {
    validationOptions: { checkArn: false },
  });
  const execution = sm.run({ sourceId: 'default' } as never, {
    context: {
      Execution: { Id: executionId, Name: executionId.split(':').pop() },
      StateMachine: { Id: 'arn:aws:states:us-east-1:123456789012:stateMachine:ingest', Name: 'ingest' },
    },
    overrides: {
      taskResourceLocalHandlers: {
        [FETCH_PAGE_STATE]: async () =>
          ({ sourceId: 'default', done: false, iteration: 1, waitSeconds: 0 }) as never,
        [CONTINUE_AS_NEW_STATE]: async (payload) => {
          requests.push(payload as StartExecution);
          return (await startExecution(payload as StartExecution)) as never;
        },
      },
    },
  });
  const result = await execution.result;
  return { requests, result };
}

const parentId = 'arn:aws:states:us-east-1:123456789012:execution:ingest:default-2026-11-29T21-00-00-000Z';

describe('continue-as-new, run by the local interpreter', () => {
  it('names the child from the parent alone: the same name on every attempt, within the limits', async () => {
    const first = await continueAsNewRequest(parentId);
    const again = await continueAsNewRequest(parentId);
    const name = first.requests[0]!.Name;
    expect(name).toMatch(/^continued-[0-9a-f]{40}$/);
    // Execution names: at most 80 characters; letters, digits, '-' and '_' are always allowed.
    expect(name.length).toBeLessThanOrEqual(80);
    expect(again.requests[0]!.Name).toBe(name);
  });

  it('derives the name as the SHA-1 of the parent execution id (distinct parents, distinct children)', async () => {
    // The interpreter's own SHA-1 is wrong for inputs over one 64-byte block (measured: MD5,
    // SHA-1 and SHA-256 all differ from node:crypto there), so the exact value is checked on a
    // short id; Step Functions hashes any length correctly.
    const shortId = 'arn:aws:states:local:0:execution:a:b';
    const { requests } = await continueAsNewRequest(shortId);
    expect(requests[0]!.Name).toBe(`continued-${createHash('sha1').update(shortId).digest('hex')}`);
  });

  it('links the child to its parent and hands the lease over through parentExecutionId', async () => {
    const { requests } = await continueAsNewRequest(parentId);
    expect(requests[0]!.Input).toEqual({
      sourceId: 'default',
      parentExecutionId: parentId,
      AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID: parentId,
    });
    expect(requests[0]!.StateMachineArn).toBe('arn:aws:states:us-east-1:123456789012:stateMachine:ingest');
  });

  it('ends as continued, without retrying, when the child name is already taken', async () => {
    const taken = Object.assign(new Error('Execution Already Exists'), {
      name: 'StepFunctions.ExecutionAlreadyExistsException',
    });
    const { requests, result } = await continueAsNewRequest(parentId, async () => {
      throw taken;
    });
    expect(requests).toHaveLength(1);
    expect(result).toMatchObject({ Error: 'StepFunctions.ExecutionAlreadyExistsException' });
    expect(CONTINUED_STATE).toBe('ContinuedAsNew');
  });
});

import { createHash } from 'node:crypto';
import { StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import { describe, expect, it } from 'vitest';
import { synthesizeDefinition } from '#infra/definition.ts';
import {
  CONTINUE_AS_NEW_STATE,
  CONTINUED_STATE,
  FETCH_PAGE_STATE,
  PLAN_STATE,
} from '#infra/state-machine.ts';
import { FIXTURE_MIGRATIONS } from './support.ts';
import '#local/run/node20.ts';

const definition = synthesizeDefinition({ migrationsDir: FIXTURE_MIGRATIONS });

type StartExecution = { StateMachineArn: string; Name: string; Input: Record<string, unknown> };
type Invocation = { executionId: string; action?: string; state: Record<string, unknown> };

/**
 * Runs the deployed definition in the interpreter the local runner uses: Plan starts one chain
 * with a cap of one page, the chain pauses after its page, Replan plans again (round 1), and
 * ContinueAsNew asks StartExecution for the child. Returns that request and every invocation.
 */
async function continueAsNewRequest(
  executionId: string,
  startExecution: (request: StartExecution) => Promise<unknown> = async () => ({}),
  input: Record<string, unknown> = { sourceId: 'default' },
) {
  const requests: StartExecution[] = [];
  const invocations: Invocation[] = [];
  const sm = new StateMachine(definition as unknown as StateMachineDefinition, {
    validationOptions: { checkArn: false },
  });
  // A copy: the interpreter's States.JsonMerge (Replan) assigns into $$.Execution.Input, which
  // is the object given to run().
  const execution = sm.run(structuredClone(input) as never, {
    context: {
      Execution: { Id: executionId, Name: executionId.split(':').pop() },
      StateMachine: { Id: 'arn:aws:states:us-east-1:123456789012:stateMachine:ingest', Name: 'ingest' },
    },
    overrides: {
      taskResourceLocalHandlers: {
        [PLAN_STATE]: async (payload) => {
          const p = payload as Invocation;
          invocations.push(p);
          const { sourceId = 'default', parentExecutionId, round = 0 } = p.state;
          const chain = { sourceId, chain: 0, iteration: 0, perChainCap: 1, parentExecutionId };
          return { sourceId, done: false, round, chains: [chain] } as never;
        },
        [FETCH_PAGE_STATE]: async (payload) => {
          const p = payload as Invocation;
          invocations.push(p);
          return { ...p.state, chain: 0, done: false, iteration: 1, waitSeconds: 0 } as never;
        },
        [CONTINUE_AS_NEW_STATE]: async (payload) => {
          requests.push(payload as StartExecution);
          return (await startExecution(payload as StartExecution)) as never;
        },
      },
    },
  });
  const result = await execution.result;
  return { requests, result, invocations };
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

  it('continues as new once the chains paused at their cap and the second plan did not finish', async () => {
    const { requests, invocations } = await continueAsNewRequest(parentId);
    expect(invocations.map((i) => [i.action ?? 'page', i.state.round ?? null])).toEqual([
      ['plan', null],
      ['page', null],
      ['plan', 1],
    ]);
    expect(requests).toHaveLength(1);
  });

  it('replans a child with its own input: the parent to take the lease over from, and round 1', async () => {
    const childInput = {
      sourceId: 'default',
      parentExecutionId: parentId,
      AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID: parentId,
    };
    const childId = `${parentId}-child`;
    const { invocations, requests } = await continueAsNewRequest(childId, undefined, childInput);
    const plans = invocations.filter((i) => i.action === 'plan');
    expect(plans.map((p) => p.executionId)).toEqual([childId, childId]);
    expect(plans[0]!.state).toEqual(childInput);
    expect(plans[1]!.state).toEqual({ ...childInput, round: 1 });
    // The chain's first page carries the handover too (its row may still be leased by the parent).
    expect(invocations[1]!.state).toMatchObject({ chain: 0, parentExecutionId: parentId, iteration: 0 });
    // The grandchild hands over from this child.
    expect(requests[0]!.Input.parentExecutionId).toBe(childId);
  });

  it('replans an execution an operator started without a parent (no parentExecutionId to select)', async () => {
    const { invocations } = await continueAsNewRequest(parentId, undefined, { sourceId: 'other' });
    const replanned = invocations.filter((i) => i.action === 'plan')[1]!;
    expect(replanned.state).toEqual({ sourceId: 'other', round: 1 });
  });
});

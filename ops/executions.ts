import {
  DescribeExecutionCommand,
  type DescribeExecutionCommandOutput,
  type ExecutionListItem,
  type ExecutionStatus,
  ListExecutionsCommand,
  type SFNClient,
  StartExecutionCommand,
  StopExecutionCommand,
} from '@aws-sdk/client-sfn';
import { z } from 'zod';
import { DataSyncError } from '#shared/errors.ts';

/*
 * The Step Functions calls of `npm run ingest`: find a source's executions, start one, stop one.
 */

/** An execution for this source is already RUNNING: starting another would only fail on the lease. */
export class ExecutionRunningError extends DataSyncError {
  override readonly name = 'ExecutionRunningError';
  readonly transient = false;
}

/** `stop` found nothing to stop. */
export class NoRunningExecutionError extends DataSyncError {
  override readonly name = 'NoRunningExecutionError';
  readonly transient = false;
}

/** What the Step Functions calls need. */
export interface SfnDeps {
  sfn: Pick<SFNClient, 'send'>;
  /** Epoch milliseconds. */
  now: () => number;
}

export interface Target {
  stateMachineArn: string;
  sourceId: string;
}

/** Executions examined when looking for a source's newest one: input is only visible per execution. */
const MAX_DESCRIBED = 100;

const executionInputSchema = z.object({ sourceId: z.string().default('default') }).loose();

function sourceOf(input: string | undefined): string | null {
  try {
    const parsed = executionInputSchema.safeParse(JSON.parse(input ?? '{}'));
    return parsed.success ? parsed.data.sourceId : null;
  } catch {
    return null;
  }
}

/**
 * Executions of `sourceId`, newest first. The source lives in each execution's input, so every
 * candidate is described; continue-as-new children have generated names, so names cannot filter.
 */
export async function findExecutions(
  deps: SfnDeps,
  target: Target,
  options: { status?: ExecutionStatus; limit: number },
): Promise<DescribeExecutionCommandOutput[]> {
  const found: DescribeExecutionCommandOutput[] = [];
  let described = 0;
  let nextToken: string | undefined;
  do {
    const page = await deps.sfn.send(
      new ListExecutionsCommand({
        stateMachineArn: target.stateMachineArn,
        ...(options.status ? { statusFilter: options.status } : {}),
        maxResults: 50,
        nextToken,
      }),
    );
    const items: ExecutionListItem[] = page.executions ?? [];
    for (const item of items) {
      if (described >= MAX_DESCRIBED) return found;
      described++;
      const execution = await deps.sfn.send(
        new DescribeExecutionCommand({ executionArn: item.executionArn }),
      );
      if (sourceOf(execution.input) === target.sourceId) {
        found.push(execution);
        if (found.length >= options.limit) return found;
      }
    }
    nextToken = page.nextToken;
  } while (nextToken);
  return found;
}

export interface StartResult {
  executionArn: string;
  name: string;
  /** The ended execution whose lease the new one takes over, if any. */
  parentExecutionId: string | null;
}

/**
 * Starts an execution for the source unless one is RUNNING. When the newest execution has ended
 * (failed, aborted, timed out or succeeded), its ARN goes in as `parentExecutionId`, so a lease a
 * crashed execution left behind is handed over at once instead of blocking until it expires.
 */
export async function startIngestion(deps: SfnDeps, target: Target): Promise<StartResult> {
  const running = await findExecutions(deps, target, { status: 'RUNNING', limit: 1 });
  if (running[0]) {
    throw new ExecutionRunningError(
      `Source "${target.sourceId}" already has a RUNNING execution ${running[0].executionArn}. ` +
        'Watch it with `npm run ingest -- status`, or stop it with `npm run ingest -- stop` before starting again.',
    );
  }
  const [last] = await findExecutions(deps, target, { limit: 1 });
  const parentExecutionId = last && last.status !== 'RUNNING' ? (last.executionArn ?? null) : null;
  const name = `${target.sourceId}-${new Date(deps.now()).toISOString().replace(/[:.]/g, '-')}`.slice(0, 80);
  const input: Record<string, string> = { sourceId: target.sourceId };
  if (parentExecutionId) input.parentExecutionId = parentExecutionId;
  const out = await deps.sfn.send(
    new StartExecutionCommand({
      stateMachineArn: target.stateMachineArn,
      name,
      input: JSON.stringify(input),
    }),
  );
  return { executionArn: out.executionArn as string, name, parentExecutionId };
}

export interface StopResult {
  executionArn: string;
}

/** Stops the source's RUNNING execution, recording who stopped it and why. */
export async function stopIngestion(deps: SfnDeps, target: Target, cause: string): Promise<StopResult> {
  const [running] = await findExecutions(deps, target, { status: 'RUNNING', limit: 1 });
  if (!running?.executionArn) {
    throw new NoRunningExecutionError(
      `Source "${target.sourceId}" has no RUNNING execution to stop. Check the source id (--source) and the state machine ARN.`,
    );
  }
  await deps.sfn.send(
    new StopExecutionCommand({ executionArn: running.executionArn, error: 'StoppedByOperator', cause }),
  );
  return { executionArn: running.executionArn };
}

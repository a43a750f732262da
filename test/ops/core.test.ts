import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  ListExecutionsCommand,
  SFNClient,
  StartExecutionCommand,
  StopExecutionCommand,
} from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  ExecutionRunningError,
  formatStatus,
  ingestionStatus,
  NoRunningExecutionError,
  startIngestion,
  stopIngestion,
} from '../../ops/core.ts';

const SM = 'arn:aws:states:us-east-1:123456789012:stateMachine:datasync-ingest';
const exec = (name: string) => `arn:aws:states:us-east-1:123456789012:execution:datasync-ingest:${name}`;
const NOW = Date.parse('2026-02-20T12:00:00.000Z');
const sfnMock = mockClient(SFNClient);
const sfn = new SFNClient({ region: 'us-east-1' });
const deps = { sfn, now: () => NOW };
const target = { stateMachineArn: SM, sourceId: 'default' };

interface Exec {
  name: string;
  status: 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'ABORTED' | 'TIMED_OUT';
  input: Record<string, unknown>;
  startMs: number;
  stopMs?: number;
  output?: unknown;
  error?: string;
  cause?: string;
}

/** Executions newest first, as ListExecutions returns them. */
function givenExecutions(executions: Exec[]) {
  sfnMock.on(ListExecutionsCommand).callsFake((input: { statusFilter?: string }) => ({
    executions: executions
      .filter((e) => !input.statusFilter || e.status === input.statusFilter)
      .map((e) => ({
        executionArn: exec(e.name),
        stateMachineArn: SM,
        name: e.name,
        status: e.status,
        startDate: new Date(e.startMs),
      })),
  }));
  sfnMock.on(DescribeExecutionCommand).callsFake((input: { executionArn: string }) => {
    const e = executions.find((x) => exec(x.name) === input.executionArn)!;
    return {
      executionArn: exec(e.name),
      status: e.status,
      input: JSON.stringify(e.input),
      startDate: new Date(e.startMs),
      ...(e.stopMs ? { stopDate: new Date(e.stopMs) } : {}),
      ...(e.output ? { output: JSON.stringify(e.output) } : {}),
      ...(e.error ? { error: e.error, cause: e.cause } : {}),
    };
  });
}

const step = (inserted: number, pageInserted: number, pages: number, iteration: number) => ({
  sourceId: 'default',
  done: false,
  waitSeconds: 2,
  nextCursor: 'c',
  page: { received: 5000, inserted: pageInserted, duplicates: 0, rejected: 0 },
  totals: { pages, inserted, duplicates: 0, rejected: 0 },
  iteration,
});

beforeEach(() => {
  sfnMock.reset();
});

describe('start', () => {
  it('refuses while an execution for the source is RUNNING, naming it', async () => {
    givenExecutions([
      { name: 'other-1', status: 'RUNNING', input: { sourceId: 'other' }, startMs: NOW - 1000 },
      { name: 'default-1', status: 'RUNNING', input: { sourceId: 'default' }, startMs: NOW - 2000 },
    ]);
    const error = await startIngestion(deps, target).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ExecutionRunningError);
    expect(String((error as Error).message)).toContain(exec('default-1'));
    expect(sfnMock.commandCalls(StartExecutionCommand)).toHaveLength(0);
  });

  it('starts with the source id and hands over from the newest ended execution of that source', async () => {
    givenExecutions([
      { name: 'other-1', status: 'RUNNING', input: { sourceId: 'other' }, startMs: NOW - 1000 },
      {
        name: 'child',
        status: 'FAILED',
        input: { sourceId: 'default', parentExecutionId: 'x' },
        startMs: NOW - 5000,
      },
      { name: 'default-0', status: 'SUCCEEDED', input: { sourceId: 'default' }, startMs: NOW - 9000 },
    ]);
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: exec('new'), startDate: new Date(NOW) });
    const result = await startIngestion(deps, target);
    expect(result).toEqual({
      executionArn: exec('new'),
      name: 'default-2026-02-20T12-00-00-000Z',
      parentExecutionId: exec('child'),
    });
    const call = sfnMock.commandCalls(StartExecutionCommand)[0]!.args[0].input;
    expect(call.stateMachineArn).toBe(SM);
    expect(JSON.parse(call.input!)).toEqual({ sourceId: 'default', parentExecutionId: exec('child') });
  });

  it('starts without a parent when the source has never run, reading a missing sourceId as "default"', async () => {
    givenExecutions([{ name: 'x', status: 'SUCCEEDED', input: { sourceId: 'other' }, startMs: NOW - 1 }]);
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: exec('new'), startDate: new Date(NOW) });
    const result = await startIngestion(deps, { stateMachineArn: SM, sourceId: 'fresh' });
    expect(result.parentExecutionId).toBeNull();
    expect(JSON.parse(sfnMock.commandCalls(StartExecutionCommand)[0]!.args[0].input.input!)).toEqual({
      sourceId: 'fresh',
    });

    givenExecutions([{ name: 'console', status: 'ABORTED', input: {}, startMs: NOW - 1 }]);
    const withDefault = await startIngestion(deps, target);
    expect(withDefault.parentExecutionId).toBe(exec('console'));
  });

  it('follows ListExecutions pages', async () => {
    sfnMock
      .on(ListExecutionsCommand)
      .resolvesOnce({ executions: [], nextToken: 't' })
      .resolvesOnce({ executions: [] })
      .resolvesOnce({
        executions: [
          {
            executionArn: exec('a'),
            stateMachineArn: SM,
            name: 'a',
            status: 'FAILED',
            startDate: new Date(),
          },
        ],
        nextToken: 't2',
      });
    sfnMock
      .on(DescribeExecutionCommand)
      .resolves({ executionArn: exec('a'), status: 'FAILED', input: '{"sourceId":"default"}' });
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: exec('new'), startDate: new Date(NOW) });
    const result = await startIngestion(deps, target);
    expect(result.parentExecutionId).toBe(exec('a'));
    expect(sfnMock.commandCalls(ListExecutionsCommand)[1]!.args[0].input.nextToken).toBe('t');
  });
});

describe('stop', () => {
  it('stops the running execution of the source with the cause', async () => {
    givenExecutions([
      { name: 'default-1', status: 'RUNNING', input: { sourceId: 'default' }, startMs: NOW - 1 },
    ]);
    sfnMock.on(StopExecutionCommand).resolves({ stopDate: new Date(NOW) });
    expect(await stopIngestion(deps, target, 'maintenance')).toEqual({ executionArn: exec('default-1') });
    expect(sfnMock.commandCalls(StopExecutionCommand)[0]!.args[0].input).toEqual({
      executionArn: exec('default-1'),
      error: 'StoppedByOperator',
      cause: 'maintenance',
    });
  });

  it('says so when nothing runs for the source', async () => {
    givenExecutions([{ name: 'o', status: 'RUNNING', input: { sourceId: 'other' }, startMs: NOW - 1 }]);
    await expect(stopIngestion(deps, target, 'x')).rejects.toBeInstanceOf(NoRunningExecutionError);
    expect(sfnMock.commandCalls(StopExecutionCommand)).toHaveLength(0);
  });
});

describe('status', () => {
  it('shows the running execution with progress from its history and the checkpoint, with rate and ETA', async () => {
    const start = NOW - 100_000;
    givenExecutions([
      { name: 'default-1', status: 'RUNNING', input: { sourceId: 'default' }, startMs: start },
    ]);
    const lambdaEvent = (output: unknown, atMs: number) => ({
      timestamp: new Date(atMs),
      type: 'LambdaFunctionSucceeded' as const,
      id: 1,
      lambdaFunctionSucceededEventDetails: { output: JSON.stringify(output) },
    });
    sfnMock.on(GetExecutionHistoryCommand).callsFake((input: { reverseOrder?: boolean }) => ({
      events: input.reverseOrder
        ? [
            { timestamp: new Date(NOW), type: 'WaitStateEntered', id: 9 },
            lambdaEvent(step(150_000, 5000, 30, 20), NOW - 1000),
          ]
        : // The execution resumed a source that already had 100,000 events (first page added 5,000).
          [lambdaEvent(step(105_000, 5000, 21, 1), start + 4000)],
    }));
    const report = await ingestionStatus(
      {
        ...deps,
        readCheckpoint: async (sourceId) => {
          expect(sourceId).toBe('default');
          return {
            eventsInserted: 150_000,
            pages: 30,
            totalReported: 3_000_000,
            status: 'running',
            lastError: 'UpstreamUnavailableError: 503',
            updatedAtMs: NOW - 1000,
          };
        },
      },
      target,
    );
    // 50,000 events during this execution in 100 s.
    expect(report.eventsPerSecond).toBe(500);
    expect(report.etaSeconds).toBe(5700);
    expect(report.execution).toMatchObject({ arn: exec('default-1'), status: 'RUNNING', startedAtMs: start });
    const text = formatStatus(report).join('\n');
    expect(text).toContain('state:      RUNNING');
    expect(text).toContain('events:     150,000 of 3,000,000 (5.0%)');
    expect(text).toContain('pages:      30');
    expect(text).toContain('rate:       500 events/s');
    expect(text).toContain('eta:        1h 35m');
    expect(text).toContain('last error: UpstreamUnavailableError: 503');
  });

  it('shows the newest ended execution with its error and output when none runs, without a database', async () => {
    givenExecutions([
      {
        name: 'default-1',
        status: 'FAILED',
        input: { sourceId: 'default' },
        startMs: NOW - 60_000,
        stopMs: NOW - 30_000,
        error: 'AuthError',
        cause: 'The API key was refused (401): put the right key in the secret.',
      },
    ]);
    sfnMock.on(GetExecutionHistoryCommand).resolves({ events: [] });
    const report = await ingestionStatus(deps, target);
    expect(report.checkpoint).toBeNull();
    expect(report.etaSeconds).toBeNull();
    const text = formatStatus(report).join('\n');
    expect(text).toContain('state:      FAILED');
    expect(text).toContain('error:      AuthError: The API key was refused (401)');
    expect(text).toContain(`stopped:    ${new Date(NOW - 30_000).toISOString()}`);
  });

  it('reads totals from a succeeded execution output', async () => {
    givenExecutions([
      {
        name: 'default-1',
        status: 'SUCCEEDED',
        input: { sourceId: 'default' },
        startMs: NOW - 60_000,
        stopMs: NOW,
        output: { ...step(3_000_000, 0, 600, 600), done: true },
      },
    ]);
    sfnMock.on(GetExecutionHistoryCommand).resolves({ events: [] });
    const text = formatStatus(await ingestionStatus(deps, target)).join('\n');
    expect(text).toContain('events:     3,000,000');
    expect(text).toContain('pages:      600');
  });

  it('says when the source has no execution', async () => {
    givenExecutions([]);
    const text = formatStatus(await ingestionStatus(deps, target)).join('\n');
    expect(text).toContain('none found for this source');
  });
});

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
  NoRunningExecutionError,
  startIngestion,
  stopIngestion,
} from '#ops/executions.ts';
import { formatStatus } from '#ops/format.ts';
import { ingestionStatus } from '#ops/progress.ts';
import { statusView } from '#shared/status/view.ts';
import { T0, threeChains } from '#test/support/chains.ts';

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
            conflicts: 4,
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
    expect(text).toContain(
      'conflicts:  4 ids sent again with other content (first copy kept; table event_conflicts)',
    );
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

describe('status of a source read by several chains', () => {
  const lambdaEvent = (output: unknown, atMs: number, id: number) => ({
    timestamp: new Date(atMs),
    type: 'LambdaFunctionSucceeded' as const,
    id,
    lambdaFunctionSucceededEventDetails: { output: JSON.stringify(output) },
  });
  const plan = (inserted: number, pages: number, mode = 'chains') => ({
    sourceId: 'default',
    done: false,
    round: 0,
    mode,
    chains: [0, 1, 2].map((chain) => ({ sourceId: 'default', chain, iteration: 0, perChainCap: 500 })),
    totals: { pages, inserted, duplicates: 0, rejected: 0 },
  });
  // A page of chain 1: its totals are chain 1's row alone.
  const chainPage = (chain: number, inserted: number, pages: number) => ({
    ...step(inserted, 5000, pages, 9),
    chain,
  });

  /** An execution that resumed a source holding 1,000,000 events: Plan first, then pages of the chains. */
  function givenChainedExecution(start: number) {
    givenExecutions([
      { name: 'default-2', status: 'RUNNING', input: { sourceId: 'default' }, startMs: start },
    ]);
    sfnMock.on(GetExecutionHistoryCommand).callsFake((input: { reverseOrder?: boolean }) => ({
      events: input.reverseOrder
        ? [
            lambdaEvent(chainPage(1, 489_998, 98), NOW - 1000, 40),
            lambdaEvent(chainPage(0, 600_000, 120), NOW - 2000, 39),
          ]
        : [
            lambdaEvent(plan(1_000_000, 200), start + 3000, 3),
            lambdaEvent(chainPage(0, 505_000, 101), start + 6000, 8),
          ],
    }));
  }

  it('prints the mode and one line per chain under the source, with the sums and a rate over all chains', async () => {
    const start = NOW - 100_000;
    givenChainedExecution(start);
    const report = await ingestionStatus(
      { ...deps, readCheckpoint: async () => statusView(threeChains(), T0) },
      target,
    );
    // 299,998 events in 100 s across the chains, not one chain's count against the source's.
    expect(report.eventsPerSecond).toBeCloseTo(2999.98, 2);
    const lines = formatStatus(report);
    const text = lines.join('\n');
    expect(text).toContain('events:     1,299,998 of 3,000,000 (43.3%)');
    expect(text).toContain('pages:      260');
    const at = lines.indexOf('pages:      260');
    expect(lines.slice(at + 1, at + 5)).toEqual([
      'chains:     3, mode chains (3 chains: the first page took 3500 ms, one request may start every 2200 ms)',
      '  chain 0: newest .. 2026-02-10T12:00:00.000Z, 120 pages, 600,000 events, reading, at 2026-02-16T12:00:00.000Z',
      '  chain 1: 2026-02-10T12:00:00.000Z .. 2026-01-31T12:00:00.000Z, 98 pages, 489,998 events, reading, at 2026-02-06T12:00:00.000Z',
      '  chain 2: 2026-01-31T12:00:00.000Z .. oldest, 42 pages, 210,000 events, done',
    ]);
    expect(text).toContain('rate limit: 3 of 10 requests left, window resets in 11s; 1 x 429 so far');
  });

  it("takes the source's events from the Plan's totals, not from one chain's page, without a database", async () => {
    const start = NOW - 100_000;
    givenChainedExecution(start);
    const report = await ingestionStatus(deps, target);
    expect(report.totals).toEqual({ pages: 200, inserted: 1_000_000, fromPlan: true });
    expect(report.latest?.chain).toBe(1);
    const text = formatStatus(report).join('\n');
    expect(text).toContain('events:     1,000,000 when the chains were planned (--status-function gives');
    expect(text).not.toContain('489,998');
    // The Plan's count is the start of this execution: no rate can be told from it alone.
    expect(report.eventsPerSecond).toBeNull();
  });

  it("reads the final totals from a chained execution's output, the last Plan's", async () => {
    givenExecutions([
      {
        name: 'default-3',
        status: 'SUCCEEDED',
        input: { sourceId: 'default' },
        startMs: NOW - 60_000,
        stopMs: NOW,
        output: { ...plan(3_000_000, 600), done: true, chains: [] },
      },
    ]);
    sfnMock.on(GetExecutionHistoryCommand).resolves({ events: [] });
    const lines = formatStatus(await ingestionStatus(deps, target));
    expect(lines).toContain('events:     3,000,000');
    expect(lines).toContain('pages:      600');
  });

  it('names a fallback and its reason, and a waiting chain', () => {
    const rows = threeChains().map((r) => ({ ...r, rangeDone: r.chain > 0 }));
    rows[0] = { ...rows[0]!, chainMode: 'fallback', chainNote: 'the upstream refused a built cursor (400)' };
    const view = statusView(rows, T0 + 600_000); // the lease has run out: waiting for the next execution
    const lines = formatStatus({
      sourceId: 'default',
      execution: null,
      latest: null,
      totals: null,
      eventsPerSecond: null,
      checkpoint: view,
      etaSeconds: null,
    });
    expect(lines).toContain('chains:     fell back to one chain: the upstream refused a built cursor (400)');
    expect(lines).toContain(
      '  chain 0: newest .. 2026-02-10T12:00:00.000Z, 120 pages, 600,000 events, waiting, at 2026-02-16T12:00:00.000Z',
    );
    expect(lines.filter((l) => l.endsWith('events, done'))).toHaveLength(2);
  });

  it('says the high-water mark, a running top-up and the last one with its new rows', () => {
    const marks = {
      hwmTs: T0,
      hwmId: 'e',
      signpostTs: T0 + 3_600_000,
      signpostId: 's',
      floorTs: T0 - 900_000,
      topupStartedAtMs: T0 + 3_600_000,
      baseInserted: 1_000,
      lastTopupAtMs: T0 + 60_000,
      lastTopupInserted: 12_040,
      topups: 2,
      lateBeyondLookback: 3,
    };
    const view = statusView([{ ...threeChains()[0]!, chainMode: 'single', marks }], T0);
    const lines = formatStatus({
      sourceId: 'default',
      execution: null,
      latest: null,
      totals: null,
      eventsPerSecond: null,
      checkpoint: view,
      etaSeconds: null,
    });
    expect(lines).toContain('high-water: 2026-02-20T12:00:00.000Z');
    expect(lines).toContain(
      'top-up:     running, from 2026-02-20T13:00:00.000Z down to 2026-02-20T11:45:00.000Z',
    );
    expect(lines).toContain(
      'last top-up: 2026-02-20T12:01:00.000Z, 12,040 new events (2 top-ups; 3 late beyond the lookback so far)',
    );
  });

  it('keeps one line for a source read by one chain, and none for a status function without chains', () => {
    const one = statusView(
      [{ ...threeChains()[0]!, chainMode: 'single', chainNote: 'one chain: the first page took 40 ms' }],
      T0,
    );
    const report = {
      sourceId: 'default',
      execution: null,
      latest: null,
      totals: null,
      eventsPerSecond: null,
      checkpoint: one,
      etaSeconds: null,
    };
    const lines = formatStatus(report);
    expect(lines.filter((l) => l.startsWith('chains:') || l.startsWith('  chain'))).toEqual([
      'chains:     1, mode single (one chain: the first page took 40 ms)',
    ]);
    const { chains: _c, mode: _m, note: _n, ...older } = one!;
    expect(formatStatus({ ...report, checkpoint: older }).some((l) => l.includes('chain'))).toBe(false);
  });
});

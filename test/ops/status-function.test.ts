import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { parseIngestArgs } from '#ops/args.ts';
import { formatStatus } from '#ops/format.ts';
import { StatusFunctionError, statusFunctionReader } from '#ops/status-function.ts';
import type { StatusResponse } from '#shared/status/view.ts';

const lambda = mockClient(LambdaClient);
afterEach(() => lambda.reset());

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
const FUNCTION = 'DataSyncIngest-StatusFunction-abc123';

const answer: StatusResponse = {
  checkpoint: {
    sourceId: 'default',
    eventsInserted: 600_000,
    pages: 120,
    rejected: 3,
    totalReported: 3_000_000,
    status: 'running',
    lastError: 'UpstreamUnavailableError: 503',
    updatedAtMs: Date.UTC(2026, 10, 29, 21, 0, 0),
    requests: 125,
    rateLimited: 2,
    lastRateLimit: { limit: 10, remaining: 0, resetSeconds: 41 },
    nextRequestAtMs: Date.UTC(2026, 10, 29, 21, 0, 41),
    leaseOwner: 'arn:aws:states:us-east-1:123456789012:execution:x:y',
    leaseExpiresAtMs: Date.UTC(2026, 10, 29, 21, 3, 0),
  },
};

describe('status through the status function (no tunnel)', () => {
  it('invokes the function with the source and prints events of the total, last error and rate-limit state', async () => {
    lambda.on(InvokeCommand).resolves({ StatusCode: 200, Payload: encode(answer) as never });
    const checkpoint = await statusFunctionReader(
      new LambdaClient({ region: 'us-east-1' }),
      FUNCTION,
    )('default');
    const calls = lambda.commandCalls(InvokeCommand);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.args[0].input.FunctionName).toBe(FUNCTION);
    expect(JSON.parse(new TextDecoder().decode(calls[0]!.args[0].input.Payload as Uint8Array))).toEqual({
      sourceId: 'default',
    });
    const lines = formatStatus({
      sourceId: 'default',
      execution: null,
      latest: null,
      totals: null,
      eventsPerSecond: null,
      checkpoint,
      etaSeconds: null,
    });
    expect(lines).toContain('events:     600,000 of 3,000,000 (20.0%)');
    expect(lines).toContain('last error: UpstreamUnavailableError: 503');
    expect(lines).toContain(
      'rate limit: 0 of 10 requests left, window resets in 41s; 2 x 429 so far; next request 2026-11-29T21:00:41.000Z',
    );
  });

  it("passes each chain through to the CLI's lines", async () => {
    const chained: StatusResponse = {
      checkpoint: {
        ...answer.checkpoint!,
        mode: 'chains',
        note: null,
        chains: [
          {
            chain: 0,
            hi: null,
            lo: Date.UTC(2026, 0, 10),
            position: Date.UTC(2026, 0, 20),
            pages: 120,
            inserted: 600_000,
            rangeDone: false,
            leased: true,
          },
          {
            chain: 1,
            hi: Date.UTC(2026, 0, 10),
            lo: null,
            position: null,
            pages: 0,
            inserted: 0,
            rangeDone: true,
            leased: false,
          },
        ],
      },
    };
    lambda.on(InvokeCommand).resolves({ StatusCode: 200, Payload: encode(chained) as never });
    const checkpoint = await statusFunctionReader(
      new LambdaClient({ region: 'us-east-1' }),
      FUNCTION,
    )('default');
    expect(checkpoint?.chains).toHaveLength(2);
    const lines = formatStatus({
      sourceId: 'default',
      execution: null,
      latest: null,
      totals: null,
      eventsPerSecond: null,
      checkpoint,
      etaSeconds: null,
    });
    expect(lines).toContain('chains:     2, mode chains');
    expect(lines).toContain('  chain 1: 2026-01-10T00:00:00.000Z .. oldest, 0 pages, 0 events, done');
  });

  it('returns null for a source with no checkpoint yet', async () => {
    lambda.on(InvokeCommand).resolves({ StatusCode: 200, Payload: encode({ checkpoint: null }) as never });
    expect(await statusFunctionReader(new LambdaClient({ region: 'us-east-1' }), FUNCTION)('new')).toBeNull();
  });

  it("names the function's error and where its log is", async () => {
    lambda.on(InvokeCommand).resolves({
      StatusCode: 200,
      FunctionError: 'Unhandled',
      Payload: encode({ errorType: 'DatabaseUnavailableError', errorMessage: 'connect ETIMEDOUT' }) as never,
    });
    const read = statusFunctionReader(new LambdaClient({ region: 'us-east-1' }), FUNCTION);
    await expect(read('default')).rejects.toBeInstanceOf(StatusFunctionError);
    await expect(read('default')).rejects.toThrow(
      /failed \(DatabaseUnavailableError: connect ETIMEDOUT\)\. Its log group is the stack output StatusLogGroup/,
    );
  });

  it('refuses an answer that is not a status, naming the likely fix', async () => {
    lambda.on(InvokeCommand).resolves({ StatusCode: 200, Payload: encode({ applied: 1 }) as never });
    await expect(
      statusFunctionReader(new LambdaClient({ region: 'us-east-1' }), FUNCTION)('default'),
    ).rejects.toThrow(/not a status[\s\S]*checkpoint[\s\S]*StatusFunctionName/);
  });

  it('takes the function from --status-function or STATUS_FUNCTION_NAME', () => {
    const arn = 'arn:aws:states:us-east-1:123456789012:stateMachine:DataSyncIngest-ingestion';
    expect(
      parseIngestArgs(['status', '--state-machine-arn', arn, '--status-function', FUNCTION], {}),
    ).toMatchObject({ statusFunction: FUNCTION });
    expect(
      parseIngestArgs(['status'], { STATE_MACHINE_ARN: arn, STATUS_FUNCTION_NAME: 'from-env' }),
    ).toMatchObject({ statusFunction: 'from-env' });
    expect(parseIngestArgs(['status', '--state-machine-arn', arn], {})).toMatchObject({
      statusFunction: null,
    });
  });
});

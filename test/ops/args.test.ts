import { describe, expect, it } from 'vitest';
import { parseIngestArgs } from '#ops/args.ts';
import { ConfigError } from '#shared/errors.ts';

const ARN = 'arn:aws:states:eu-west-1:123456789012:stateMachine:datasync-ingest';

describe('ingest CLI arguments', () => {
  it('reads the command, source and ARN, with env fallbacks', () => {
    expect(parseIngestArgs(['start', '--source', 'acme', '--state-machine-arn', ARN], {})).toMatchObject({
      command: 'start',
      sourceId: 'acme',
      stateMachineArn: ARN,
      databaseUrl: null,
    });
    expect(
      parseIngestArgs(['status'], { STATE_MACHINE_ARN: ARN, DATABASE_URL: 'postgres://u@h/db' }),
    ).toMatchObject({
      command: 'status',
      sourceId: 'default',
      stateMachineArn: ARN,
      databaseUrl: 'postgres://u@h/db',
    });
    expect(parseIngestArgs(['--help'], {})).toBe('help');
  });

  it('rejects unknown options and commands with the usage', () => {
    expect(() => parseIngestArgs(['start', '--sauce', 'x'], { STATE_MACHINE_ARN: ARN })).toThrow(
      /Unknown option '--sauce'[\s\S]*Usage: npm run ingest/,
    );
    expect(() => parseIngestArgs(['restart'], { STATE_MACHINE_ARN: ARN })).toThrow(
      /Unknown command "restart"/,
    );
    expect(() => parseIngestArgs([], { STATE_MACHINE_ARN: ARN })).toThrow(ConfigError);
  });

  it('explains where the ARN comes from when it is missing or malformed', () => {
    expect(() => parseIngestArgs(['start'], {})).toThrow(
      /--state-machine-arn <arn> or set STATE_MACHINE_ARN/,
    );
    expect(() => parseIngestArgs(['start', '--state-machine-arn', 'datasync-ingest'], {})).toThrow(
      /is not a state machine ARN/,
    );
  });

  it('validates the source id', () => {
    expect(() => parseIngestArgs(['start', '--source', 'a b'], { STATE_MACHINE_ARN: ARN })).toThrow(
      /--source: sourceId must be/,
    );
  });
});

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { collectOutput } from '#local/child-process.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const ARN = 'arn:aws:states:eu-west-1:123456789012:stateMachine:DataSyncIngest';
// A home without ~/.aws and no AWS variables: the SDK finds no credentials anywhere.
const home = mkdtempSync(join(tmpdir(), 'dsi-no-aws-'));

afterAll(() => rmSync(home, { recursive: true, force: true }));

function ingest(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'ops/cli.ts', ...args], {
    cwd: ROOT,
    // No instance metadata service to wait for either: it is what the SDK tries last.
    env: { PATH: process.env.PATH, HOME: home, AWS_EC2_METADATA_DISABLED: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return collectOutput(child);
}

describe('npm run ingest without AWS credentials', () => {
  it('start explains the fix in one message, without the SDK warning or a stack trace', async () => {
    const run = await ingest(['start', '--state-machine-arn', ARN]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('No AWS credentials found');
    expect(run.stderr).toContain('aws configure');
    expect(run.stderr).toContain('AWS_PROFILE');
    expect(run.stderr).not.toContain('NodeVersionSupportWarning');
    expect(run.stderr).not.toMatch(/^\s+at /m);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
  });
});

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '#infra/ingestion-stack.ts';

/*
 * The CDK app as `cdk synth`, `cdk deploy` and `cdk destroy` run it: a child process that reads
 * its context from CDK_CONTEXT_JSON and writes the assembly to CDK_OUTDIR.
 */

const outdirs: string[] = [];
afterAll(() => {
  for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
});

function runApp(
  context: Record<string, unknown>,
): Promise<{ code: number | null; stdout: string; stderr: string; outdir: string }> {
  const outdir = mkdtempSync(join(tmpdir(), 'app-cli-'));
  outdirs.push(outdir);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'infra/app.ts'], {
      cwd: PROJECT_ROOT,
      env: {
        ...process.env,
        // Unit-speed: the CLI itself bundles only the stacks it deploys.
        CDK_CONTEXT_JSON: JSON.stringify({ 'aws:cdk:bundling-stacks': [], ...context }),
        CDK_OUTDIR: outdir,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, outdir }));
  });
}

describe('the CDK app on the command line', () => {
  it('is run by npm run deploy and npm run destroy with the context the cases below give it', () => {
    const { scripts } = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    expect(scripts.deploy).toMatch(/cdk deploy .*-c requireAlarmDestination=true/);
    expect(scripts.destroy).toMatch(/cdk destroy .*-c destroy=true/);
    expect(scripts.cost).toBe('tsx infra/cost.ts');
  });

  it('says a missing API URL in one line naming the fix, without a stack trace (npm run synth)', async () => {
    const { code, stderr } = await runApp({});
    expect(code).toBe(1);
    expect(stderr.trim().split('\n')).toEqual([
      'error: The DataSync API URL is not set: pass -c datasyncApiUrl=https://<host>/api/v1 (or set it in cdk.json "context").',
    ]);
  });

  it('refuses a deploy whose alarms notify nobody in one line (npm run deploy sets requireAlarmDestination)', async () => {
    const { code, stderr } = await runApp({
      datasyncApiUrl: 'https://datasync.example.com/api/v1',
      requireAlarmDestination: 'true',
    });
    expect(code).toBe(1);
    expect(stderr.trim()).toMatch(/^error: Alarms would notify nobody: pass -c alarmEmail=[^\n]*$/);
  });

  it('builds for npm run destroy without the API URL or an alarm destination, and says what it keeps', async () => {
    const { code, stderr, outdir } = await runApp({ destroy: 'true', requireAlarmDestination: 'true' });
    expect(code, stderr).toBe(0);
    expect(stderr).toContain(
      'DataSyncIngest: destroy keeps a final snapshot of the database and its master secret',
    );
    expect(readdirSync(outdir)).toContain('DataSyncIngest.template.json');
  }, 240_000);
});

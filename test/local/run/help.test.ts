import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { collectOutput } from '#local/child-process.ts';

const ROOT = resolve(import.meta.dirname, '../../..');

function run(
  script: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return collectOutput(child);
}

// Every command a newcomer can type answers --help with its usage and exit 0, nothing on stderr.
describe('--help', () => {
  it.each([
    ['npm run local', 'local/run/cli.ts', [], /--data-dir DIR/],
    ['npm run local:db', 'local/run/db-cli.ts', [], /--query SQL/],
    ['npm run bench', 'bench/run.ts', [], /persist .*\n.*options: --pages N/],
    ['npm run bench -- persist', 'bench/run.ts', ['persist'], /^Usage: npm run bench -- persist/],
    ['npm run localstack:*', 'local/localstack/cli.ts', [], /Usage: npm run localstack:/],
  ])(
    '%s',
    async (_name, script, before, usage) => {
      const r = await run(script, [...before, '--help']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(usage);
      expect(r.stderr).toBe('');
    },
    60_000,
  );

  it('npm run bench with an unknown option says so in one line and points at --help', async () => {
    const r = await run('bench/run.ts', ['persist', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      "error: Unknown option '--bogus'. Run `npm run bench -- --help` for the options.\n",
    );
  }, 60_000);
});

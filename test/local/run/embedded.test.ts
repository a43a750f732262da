import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectOutput } from '#local/child-process.ts';
import { stopEmbeddedPostgres, urlFor } from '#local/embedded-postgres.ts';
import { type CliProcess, type CliResult, lastJson, lines, readSource, runCli, startCli } from './support.ts';

// The README's first command: no --database-url, so the runner starts its own PostgreSQL in the
// data dir and keeps its data there for the next run.
let work: string;
// A child process per run, each starting (or re-using) the embedded server: room for a busy machine.
const E2E_TIMEOUT_MS = 300_000;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'dsi-local-embedded-'));
  // As root, the embedded server runs as the OS user `postgres`, which must reach the data dir.
  chmodSync(work, 0o755);
});

afterAll(async () => {
  for (const name of ['variants', 'killed', 'db']) {
    await stopEmbeddedPostgres(join(work, name, 'postgres')).catch(() => false);
  }
  rmSync(work, { recursive: true, force: true });
});

const serverRunning = (dataDir: string) => existsSync(join(dataDir, 'postgres', 'postmaster.pid'));

/** The embedded server's `datasync` database, found the way pg_ctl records it. */
function embeddedUrl(dataDir: string): string {
  const port = Number(readFileSync(join(dataDir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[3]);
  return urlFor(port).replace(/\/postgres$/, '/datasync');
}

const quick = (dataDir: string, events: number, source = 'default') => [
  '--source',
  source,
  '--latency-ms',
  '0',
  '--chains',
  '1',
  '--events',
  String(events),
  '--rate-limit',
  '0',
  '--min-spacing-ms',
  '0',
  '--data-dir',
  dataDir,
  '--json',
];

describe('npm run local with the embedded PostgreSQL', () => {
  it(
    'runs a quick variant, then another data set on the same data dir: each its own source, both kept',
    async () => {
      const dataDir = join(work, 'variants');
      // Without --source, as a newcomer types it: the variant is named after its options.
      const variant = (events: number) => quick(dataDir, events).slice(2);
      const first = await runCli(variant(20_000));
      expect(first.code, `${first.stdout}\n${first.stderr}`).toBe(0);
      const firstSource = 'sim-20000-rl0-latency0-chains1';
      expect(lastJson(first.stdout)).toMatchObject({
        status: 'complete',
        sourceId: firstSource,
        events: 20_000,
        verified: true,
      });
      // The run stops the server it started.
      expect(serverRunning(dataDir)).toBe(false);

      const again = await runCli(variant(20_000));
      expect(again.code, `${again.stdout}\n${again.stderr}`).toBe(0);
      expect(again.stdout).toContain(`source "${firstSource}" is complete (20,000 events stored`);
      expect(lastJson(again.stdout)).toMatchObject({
        status: 'complete',
        events: 20_000,
        topUp: { newEvents: 0, requests: 1 },
      });

      // The natural next step of a newcomer: a bigger data set on the same data dir. It used to
      // start the first source over; now it is a source of its own and the first one stays.
      const bigger = await runCli(variant(50_000));
      expect(bigger.code, `${bigger.stdout}\n${bigger.stderr}`).toBe(0);
      expect(bigger.stdout).not.toContain('starting the source over');
      expect(lastJson(bigger.stdout)).toMatchObject({
        status: 'complete',
        sourceId: 'sim-50000-rl0-latency0-chains1',
        events: 50_000,
        distinctIds: 50_000,
        expectedEvents: 50_000,
        verified: true,
      });
      expect(lines(bigger.stderr)).toHaveLength(0);
      expect(bigger.stdout).not.toContain('FAILED');
      const kept = await runCli(variant(20_000));
      expect(kept.stdout).toContain(`source "${firstSource}" is complete (20,000 events stored`);
    },
    E2E_TIMEOUT_MS,
  );

  it(
    'stops the server a run killed with SIGKILL left running, once the next run is done',
    async () => {
      const dataDir = join(work, 'killed');
      const args = [
        ...quick(dataDir, 60_000).filter((a) => a !== '--json'),
        '--rate-limit',
        '10',
        '--time-scale',
        '20',
        '--json',
      ];
      const run = startCli(args);
      await waitForPages(dataDir, 2, run);
      run.child.kill('SIGKILL');
      await run.done;
      // Detached by design (pg_ctl): the kill leaves it up.
      expect(serverRunning(dataDir)).toBe(true);

      const next = await runCli(args);
      expect(next.code, `${next.stdout}\n${next.stderr}`).toBe(0);
      expect(next.stdout).toContain('the embedded PostgreSQL was left running by a process that is gone');
      expect(lastJson(next.stdout)).toMatchObject({ status: 'complete', events: 60_000, verified: true });
      expect(serverRunning(dataDir)).toBe(false);
    },
    E2E_TIMEOUT_MS,
  );

  it(
    'opens the data without psql: npm run local:db -- --query, and the URL until Ctrl-C',
    async () => {
      const dataDir = join(work, 'db');
      const none = await runDb(['--data-dir', dataDir, '--query', 'select 1']);
      expect(none.code).toBe(1);
      expect(lines(none.stderr)).toEqual([
        `error: there is no local database in ${dataDir} yet: run \`npm run local\` first (or pass the --data-dir it used)`,
      ]);

      expect((await runCli(quick(dataDir, 5_000))).code).toBe(0);
      const q = await runDb([
        '--data-dir',
        dataDir,
        '--query',
        "select source_id, status, events_inserted from checkpoints where source_id = 'default'",
      ]);
      expect(q.code, q.stderr).toBe(0);
      expect(q.stdout).toBe('source_id\tstatus\tevents_inserted\ndefault\tcomplete\t5000\n(1 row)\n');
      expect(serverRunning(dataDir)).toBe(false);

      const bad = await runDb(['--data-dir', dataDir, '--query', 'select * from no_such_table']);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain('error: the query failed: relation "no_such_table" does not exist');

      // Interactive: it prints the URL, serves it, and stops on Ctrl-C.
      const child = spawnDb(['--data-dir', dataDir]);
      const closed = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
      const url = await new Promise<string>((found, failed) => {
        let out = '';
        child.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /^database: (postgres:\/\/\S+)$/m.exec(out);
          if (m?.[1]) found(m[1]);
        });
        child.once('close', () => failed(new Error(`local:db exited early:\n${out}`)));
      });
      expect(url).toMatch(/^postgres:\/\/postgres:postgres@127\.0\.0\.1:\d+\/datasync$/);
      expect((await readSource(url, 'default')).events).toBe(5_000);
      child.kill('SIGINT');
      expect(await closed).toBe(0);
      expect(serverRunning(dataDir)).toBe(false);

      const help = await runDb(['--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('1.1 GB');
      expect(help.stdout).toContain('rm -rf <data-dir>');
    },
    E2E_TIMEOUT_MS,
  );
});

const DB_CLI = resolve(import.meta.dirname, '../../../local/run/db-cli.ts');

function spawnDb(args: string[]) {
  return spawn(process.execPath, ['--import', 'tsx', DB_CLI, ...args], {
    cwd: resolve(import.meta.dirname, '../../..'),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function runDb(args: string[]): Promise<CliResult> {
  return collectOutput(spawnDb(args));
}

/** Until the run has stored `pages` pages; the server and its database appear along the way. */
async function waitForPages(dataDir: string, pages: number, run: CliProcess): Promise<void> {
  for (;;) {
    if (run.child.exitCode !== null)
      throw new Error(`the run exited early:\n${run.stdout()}\n${run.stderr()}`);
    if (serverRunning(dataDir)) {
      // postmaster.pid can vanish between the check and the read while the server starts or
      // stops: that is "not yet", like a refused connection.
      const state = await Promise.resolve()
        .then(() => readSource(embeddedUrl(dataDir), 'default'))
        .catch(() => null);
      if ((state?.checkpoint?.pages ?? 0) >= pages) return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

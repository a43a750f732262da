import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { datasetFor, resolveSimulatorOptions } from '#local/simulator/index.ts';
import { acquireLease } from '#shared/db/checkpoints.ts';
import { createDb, createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { lastJson, lines, readSource, runCli, startCli, waitForSource } from './support.ts';

// A run killed without warning, or stopped with Ctrl-C, is resumed by running the same command.
// The chaos profile (malformed rows, duplicates, 5xx, truncated bodies) runs through all of it.
let db: TestDatabase;
let dataDir: string;
const EVENTS = 60_000;

beforeAll(async () => {
  db = await createTestDatabase('dsi_local_crash');
  dataDir = mkdtempSync(join(tmpdir(), 'dsi-local-crash-'));
});

afterAll(async () => {
  await db?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

// Rows are keyed by event id alone, so each source gets a data set of its own (seed).
const chaosDataset = (seed: number) =>
  datasetFor(resolveSimulatorOptions({ events: EVENTS, seed, chaos: true }));
const KILLED = chaosDataset(7);
const INTERRUPTED = chaosDataset(8);
// A child process that ingests tens of pages, killed and restarted: room for a busy machine.
const E2E_TIMEOUT_MS = 300_000;

function args(source: string, seed: number): string[] {
  return [
    '--latency-ms',
    '0',
    '--chains',
    '1',
    '--events',
    String(EVENTS),
    '--seed',
    String(seed),
    '--chaos',
    '--time-scale',
    '20',
    '--max-iterations',
    '4',
    '--source',
    source,
    '--database-url',
    db.url,
    '--data-dir',
    dataDir,
    '--json',
  ];
}

async function expectExact(source: string, dataset: ReturnType<typeof chaosDataset>) {
  const state = await readSource(db.url, source);
  expect(state.events).toBe(dataset.expectedValidCount());
  expect(state.distinctIds).toBe(state.events);
  expect(state.rejectedRows).toBe(dataset.rejectedIndices().length);
  expect(state.distinctRejectHashes).toBe(state.rejectedRows);
  expect(state.checkpoint).toMatchObject({
    status: 'complete',
    eventsInserted: state.events,
    rejected: state.rejectedRows,
    leaseOwner: null,
  });
}

describe('npm run local: crash, interrupt and resume', () => {
  it(
    'survives three SIGKILLs: each restart takes over the dead lease at once and the counts end exact',
    async () => {
      expect(KILLED.rejectedIndices().length).toBeGreaterThan(0);
      const a = args('killed', 7);
      let deadPid: number | null = null;
      const expectTakeover = (stdout: string, pid: number) =>
        expect(stdout).toContain(
          `resuming: the previous local run (pid ${pid}) is gone; taking over its lease`,
        );

      for (const pagesBeforeKill of [2, 5, 8]) {
        const run = startCli(a);
        await waitForSource(db.url, 'killed', (s) => (s.checkpoint?.pages ?? 0) >= pagesBeforeKill, run);
        if (deadPid !== null) expectTakeover(run.stdout(), deadPid);
        const before = await readSource(db.url, 'killed');
        run.child.kill('SIGKILL');
        const killed = await run.done;
        expect(killed.signal).toBe('SIGKILL');
        // The lease outlives its holder (TTL 10 s here): only the dead-pid check lets the next run in at once.
        const after = await readSource(db.url, 'killed');
        expect(after.checkpoint?.leaseOwner ?? '').toContain(`:${run.pid}:`);
        expect(after.checkpoint?.status).toBe('running');
        expect(after.events).toBeGreaterThanOrEqual(before.events);
        expect(after.distinctIds).toBe(after.events);
        deadPid = run.pid;
      }

      const done = await runCli(a);
      expect(done.code, `${done.stdout}\n${done.stderr}`).toBe(0);
      if (deadPid !== null) expectTakeover(done.stdout, deadPid);
      expect(lastJson(done.stdout)).toMatchObject({
        status: 'complete',
        events: KILLED.expectedValidCount(),
        distinctIds: KILLED.expectedValidCount(),
        rejected: KILLED.rejectedIndices().length,
        expectedEvents: KILLED.expectedValidCount(),
        verified: true,
      });
      await expectExact('killed', KILLED);
    },
    E2E_TIMEOUT_MS,
  );

  it(
    'takes over the lease of a dead local run even when a slow restart finds it expired',
    async () => {
      // A pid that is certainly gone: a process that ran and exited.
      const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
      const sql = createSql(db.url);
      try {
        await runMigrations(sql);
        await acquireLease(createDb(sql), {
          sourceId: 'expired',
          owner: `local:${hostname()}:${deadPid}:${'0'.repeat(8)}`,
          nowMs: Date.now() - 60_000,
          ttlMs: 10_000,
        });
      } finally {
        await sql.end();
      }
      const r = await runCli([
        '--chains',
        '1',
        '--events',
        '5000',
        '--seed',
        '10',
        '--rate-limit',
        '0',
        '--min-spacing-ms',
        '0',
        '--source',
        'expired',
        '--database-url',
        db.url,
        '--data-dir',
        dataDir,
        '--json',
      ]);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout).toContain(
        `resuming: the previous local run (pid ${deadPid}) is gone; taking over its lease`,
      );
      expect(lastJson(r.stdout)).toMatchObject({ status: 'complete', events: 5_000, verified: true });
    },
    E2E_TIMEOUT_MS,
  );

  it(
    'stops cleanly on SIGINT with exit 130 and resumes with the same command',
    async () => {
      const a = args('interrupted', 8);
      const run = startCli(a);
      await waitForSource(db.url, 'interrupted', (s) => (s.checkpoint?.pages ?? 0) >= 3, run);
      run.child.kill('SIGINT');
      const stopped = await run.done;
      expect(stopped.code, `${stopped.stdout}\n${stopped.stderr}`).toBe(130);
      expect(stopped.stderr, stopped.stdout).toContain('SIGINT: stopping after the current step');
      // It says what is stored and the exact command that resumes; nothing reads as a failure.
      expect(stopped.stdout).toMatch(
        /interrupted: [\d,]+ of [\d,]+ events are stored and checkpointed; run `npm run local -- .*--events 60000 .*--json` to resume from there/,
      );
      expect(stopped.stdout).not.toContain('FAILED');
      expect(stopped.stderr).not.toMatch(/error|failed|forced|at once:/i);
      expect(lastJson(stopped.stdout).status).toBe('interrupted');
      const between = await readSource(db.url, 'interrupted');
      expect(between.checkpoint?.status).toBe('running');
      expect(between.checkpoint?.leaseOwner).toBeNull();
      expect(between.events).toBeGreaterThan(0);
      expect(between.events).toBeLessThan(INTERRUPTED.expectedValidCount());

      const resumed = await runCli(a);
      expect(resumed.code, `${resumed.stdout}\n${resumed.stderr}`).toBe(0);
      expect(resumed.stdout).toContain('resuming source "interrupted" from its checkpoint');
      // A clean stop hands its lease back: nothing to take over.
      expect(resumed.stdout).not.toContain('taking over its lease');
      expect(lines(resumed.stderr)).toHaveLength(0);
      expect(lastJson(resumed.stdout)).toMatchObject({ status: 'complete', verified: true });
      await expectExact('interrupted', INTERRUPTED);
    },
    E2E_TIMEOUT_MS,
  );

  // Pages of 10 s (latency 200 s at time-scale 20): a stop waits for the page in flight, and a
  // signal sent just after a page was stored finds the next one with seconds to go.
  const slow = (source: string) => [
    ...args(source, 9).filter((a) => a !== '--chaos'),
    '--latency-ms',
    '200000',
  ];

  it(
    'takes one Ctrl-C delivered twice at once (terminal and npm) as one: a clean stop',
    async () => {
      const run = startCli(slow('twice'));
      await waitForSource(db.url, 'twice', (s) => (s.checkpoint?.pages ?? 0) >= 1, run);
      run.child.kill('SIGINT');
      run.child.kill('SIGINT');
      const stopped = await run.done;
      expect(stopped.code, `${stopped.stdout}\n${stopped.stderr}`).toBe(130);
      expect(stopped.stderr).not.toContain('stopped at once');
      expect(stopped.stdout).toContain('interrupted: ');
      expect(lastJson(stopped.stdout).status).toBe('interrupted');
      expect((await readSource(db.url, 'twice')).checkpoint?.leaseOwner).toBeNull();
    },
    E2E_TIMEOUT_MS,
  );

  it(
    'forces on a deliberate second Ctrl-C and says the checkpoint is whole',
    async () => {
      const run = startCli(slow('forced'));
      await waitForSource(db.url, 'forced', (s) => (s.checkpoint?.pages ?? 0) >= 1, run);
      // Let the next 10 s page get under way (the pacer may hold it back a little): a Ctrl-C
      // while no page is in flight stops at once, and there would be nothing to force.
      await new Promise((r) => setTimeout(r, 2500));
      run.child.kill('SIGINT');
      // Well past the window in which a second signal is the same keypress, well inside the 10 s page that started when the last one was stored.
      await new Promise((r) => setTimeout(r, 1500));
      run.child.kill('SIGINT');
      const forced = await run.done;
      expect(forced.code).toBe(130);
      expect(forced.stderr).toContain(
        'stopped at once: every page is stored whole or not at all; run `npm run local -- ',
      );
      expect(lastJson(forced.stdout)).toMatchObject({
        status: 'interrupted',
        error: { name: 'Interrupted' },
      });
      const state = await readSource(db.url, 'forced');
      expect(state.distinctIds).toBe(state.events);
      expect(state.events).toBe(state.checkpoint?.eventsInserted);
    },
    E2E_TIMEOUT_MS,
  );
});

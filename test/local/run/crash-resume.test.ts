import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { datasetFor, resolveSimulatorOptions } from '#local/simulator/index.ts';
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

function args(source: string, seed: number): string[] {
  return [
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
  it('survives three SIGKILLs: each restart takes over the dead lease at once and the counts end exact', async () => {
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
  });

  it('stops cleanly on SIGINT with exit 130 and resumes with the same command', async () => {
    const a = args('interrupted', 8);
    const run = startCli(a);
    await waitForSource(db.url, 'interrupted', (s) => (s.checkpoint?.pages ?? 0) >= 3, run);
    run.child.kill('SIGINT');
    const stopped = await run.done;
    expect(stopped.code, `${stopped.stdout}\n${stopped.stderr}`).toBe(130);
    expect(stopped.stderr, stopped.stdout).toContain('SIGINT: stopping after the current step');
    expect(stopped.stderr).toContain('interrupted: run the same command again to resume from the checkpoint');
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
  });
});

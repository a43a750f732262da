import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { growthFile } from '#local/run/growth-log.ts';
import { createDataset, type GrowArgs } from '#local/simulator/index.ts';
import { createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { report, SCALE, seededRandom, sized, sourceCounts } from './support.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const RUNS = sized(20, 3);
const EVENTS = sized(200_000, 30_000);
const KILLS_PER_RUN = sized(5, 2);
// One kill in four lands during start-up (module loading, synth, migrations, lease hand-over).
// The rest land during ingestion: once the checkpoint has passed a random share of the events
// still to store, plus a random 0-250 ms, so the instant falls anywhere in a page's cycle
// (fetch, parse, the page transaction, the Wait). A time-based instant would mostly miss a run
// that now ingests 200,000 events in a few seconds.
const STARTUP_KILL_MS = 3_000;
const KILL_JITTER_MS = 250;
/** The CLI's default page size (the runs here do not change it). */
const PAGE_SIZE = 5000;
const SEED = Number(process.env.RELIABILITY_SEED ?? 20260127);

let db: TestDatabase;
let sql: Sql;

beforeAll(async () => {
  db = await createTestDatabase('dsi_rel_crash');
  sql = createSql(db.url, { applicationName: 'datasync-reliability' });
  // Migrate once up front: concurrent first runs are not what this scenario is about.
  await runMigrations(sql);
});

afterAll(async () => {
  await sql?.end({ timeout: 5 });
  await db?.drop();
});

interface Attempt {
  killedAtMs: number | null;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

type Kill = { from: 'spawn'; afterMs: number } | { from: 'progress'; rows: number; afterMs: number } | null;

/** Over the source's own row and its chains' rows. */
async function insertedSoFar(sourceId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select coalesce(sum(events_inserted), 0)::int as n from checkpoints
    where source_id = ${sourceId} or chain_of = ${sourceId}`;
  return row?.n ?? 0;
}

/** Odd runs read their source with three cursor chains, even runs with one. */
const chainsOf = (run: number) => (run % 2 === 1 ? 3 : 1);

/** One CLI process; SIGKILLed as `kill` says unless it exits first. */
function runCli(
  sourceId: string,
  seed: number,
  kill: Kill,
  chains: number,
  events = EVENTS,
): Promise<Attempt> {
  return new Promise((done, fail) => {
    // node --import tsx, not npx/tsx: those put a wrapper process in between, and the SIGKILL
    // must hit the process that holds the lease and the open transaction.
    const child: ChildProcess = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'local/run/cli.ts',
        '--database-url',
        db.url,
        '--events',
        String(events),
        '--rate-limit',
        '0',
        '--latency-ms',
        '0',
        '--chains',
        String(chains),
        '--min-spacing-ms',
        '0',
        '--source',
        sourceId,
        // events.id is the primary key across sources: each run needs a data set of its own.
        '--seed',
        String(seed),
        '--data-dir',
        resolve(ROOT, '.local/reliability'),
        '--progress',
        'none',
        '--json',
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    let timer: NodeJS.Timeout | null = null;
    let killedAtMs: number | null = null;
    let exited = false;
    const arm = () => {
      if (!kill || timer) return;
      timer = setTimeout(() => {
        if (child.exitCode === null && child.kill('SIGKILL')) killedAtMs = kill.afterMs;
      }, kill.afterMs);
    };
    if (kill?.from === 'spawn') arm();
    if (kill?.from === 'progress') {
      void (async () => {
        while (!exited && (await insertedSoFar(sourceId)) < kill.rows)
          await new Promise((r) => setTimeout(r, 10));
        if (!exited) arm();
      })();
    }
    child.stdout?.on('data', (d) => {
      stdout += d;
    });
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    child.on('error', fail);
    child.on('exit', (code, signal) => {
      exited = true;
      if (timer) clearTimeout(timer);
      done({ killedAtMs: signal === 'SIGKILL' ? killedAtMs : null, code, signal, stdout, stderr });
    });
  });
}

describe(`crash anywhere: SIGKILL at random instants, restart until complete, one and three chains (${SCALE})`, () => {
  it(
    `${RUNS} runs of ${EVENTS.toLocaleString('en-US')} events end exact with no duplicates`,
    async () => {
      const random = seededRandom(SEED);
      let kills = 0;
      let killsMidRun = 0;
      let restarts = 0;
      let stored = 0;
      let duplicateRows = 0;
      for (let run = 0; run < RUNS; run++) {
        const sourceId = `crash-${SEED}-${run}`;
        for (let k = 0; k < KILLS_PER_RUN; k++) {
          const done = await insertedSoFar(sourceId);
          // Nothing left to interrupt: the final run below only has to confirm completion.
          if (done >= EVENTS) break;
          // A target inside the last page would only be reached by the commit that completes
          // the run: draw it below that, so every progress kill can land mid-run.
          const lastTarget = Math.max(done, EVENTS - PAGE_SIZE - 1);
          const kill: Kill =
            random() < 0.25
              ? { from: 'spawn', afterMs: Math.round(random() * STARTUP_KILL_MS) }
              : {
                  from: 'progress',
                  rows: done + Math.floor(random() * (lastTarget - done + 1)),
                  afterMs: Math.round(random() * KILL_JITTER_MS),
                };
          const attempt = await runCli(sourceId, SEED + run, kill, chainsOf(run));
          restarts++;
          if (attempt.killedAtMs === null) {
            // It finished before the kill: it must have finished correctly.
            expect(attempt.code, attempt.stdout + attempt.stderr).toBe(0);
            break;
          }
          kills++;
          const c = await sourceCounts(sql, sourceId);
          // Whatever instant the kill hit, what is committed is consistent: rows and counters move together.
          expect(c.rows).toBe(c.distinctIds);
          expect(c.rows).toBe(c.checkpoint?.eventsInserted ?? 0);
          if (c.checkpoint && c.checkpoint.status !== 'complete') killsMidRun++;
        }
        const final = await runCli(sourceId, SEED + run, null, chainsOf(run));
        expect(final.code, final.stdout + final.stderr).toBe(0);
        const summary = JSON.parse(final.stdout.trim().split('\n').at(-1) ?? '{}') as {
          status: string;
          verified: boolean;
          events: number;
        };
        expect(summary.status).toBe('complete');
        expect(summary.verified).toBe(true);

        const c = await sourceCounts(sql, sourceId);
        expect(c.rows).toBe(EVENTS);
        expect(c.distinctIds).toBe(EVENTS);
        expect(c.rejectedRows).toBe(0);
        expect(c.checkpoint?.status).toBe('complete');
        expect(c.checkpoint?.eventsInserted).toBe(c.rows);
        expect(c.checkpoint?.rejected).toBe(c.rejectedRows);
        expect(c.checkpoint?.leaseOwner ?? null).toBeNull();
        // The three-chain runs really ran three chains (or said why not).
        if (chainsOf(run) === 3) expect(c.checkpoint?.chainMode).toBe('chains');
        stored += c.rows;
        duplicateRows += c.rows - c.distinctIds;
      }
      report('crash-anywhere', {
        runs: RUNS,
        faults: { sigkills: kills, killsDuringIngestion: killsMidRun },
        processes: restarts + RUNS,
        expected: RUNS * EVENTS,
        stored,
        duplicates: duplicateRows,
        rejects: 0,
        seed: SEED,
      });
      expect(stored).toBe(RUNS * EVENTS);
      // The scenario is about kills in the middle of ingestion: at full size at least one per run
      // on average. A reduced run ingests its 30,000 events in well under a second, so a kill's
      // jitter can carry it past the end: there, at least one must land mid-run.
      expect(killsMidRun).toBeGreaterThanOrEqual(SCALE === 'full' ? RUNS : 1);
    },
    sized(20 * 60_000, 100_000),
  );
});

// Top-ups: a complete source whose upstream grew (newer events and late ones inside the
// lookback) is run again and SIGKILLed anywhere in the walk, restarted until complete.
const TOPUP_RUNS = sized(6, 2);
const TOPUP_BASE = sized(50_000, 10_000);
/** Seven pages or more: enough for a three-chain run to plan the gap as chains, and for kills to land mid-walk. */
const TOPUP_GROWTH: GrowArgs = { newer: sized(60_000, 32_000), lateWithin: 200, lookbackMs: 600_000 };
const TOPUP_NEW = TOPUP_GROWTH.newer + (TOPUP_GROWTH.lateWithin ?? 0);
const DATA_DIR = resolve(ROOT, '.local/reliability');

describe(`crash anywhere in a top-up: SIGKILL at random instants of the walk, restart until complete (${SCALE})`, () => {
  it(
    `${TOPUP_RUNS} top-ups of ${TOPUP_NEW.toLocaleString('en-US')} events over ${TOPUP_BASE.toLocaleString('en-US')} end exact with the mark at the newest instant`,
    async () => {
      const random = seededRandom(SEED + 1);
      let kills = 0;
      let killsMidWalk = 0;
      let stored = 0;
      let duplicates = 0;
      for (let run = 0; run < TOPUP_RUNS; run++) {
        const sourceId = `topup-${SEED}-${run}`;
        const seed = SEED + 1000 + run;
        const file = growthFile(DATA_DIR, { events: TOPUP_BASE, seed, chaos: false });
        rmSync(file, { force: true });
        const backfill = await runCli(sourceId, seed, null, chainsOf(run), TOPUP_BASE);
        expect(backfill.code, backfill.stdout + backfill.stderr).toBe(0);
        // The upstream grows: the bundled simulator replays the data dir's growth at every start.
        mkdirSync(resolve(file, '..'), { recursive: true });
        appendFileSync(file, `${JSON.stringify(TOPUP_GROWTH)}\n`);
        const total = TOPUP_BASE + TOPUP_NEW;
        for (let k = 0; k < KILLS_PER_RUN; k++) {
          const done = await insertedSoFar(sourceId);
          if (done >= total) break;
          const lastTarget = Math.max(done, total - PAGE_SIZE - 1);
          const kill: Kill =
            random() < 0.25
              ? { from: 'spawn', afterMs: Math.round(random() * STARTUP_KILL_MS) }
              : {
                  from: 'progress',
                  rows: done + Math.floor(random() * (lastTarget - done + 1)),
                  afterMs: Math.round(random() * KILL_JITTER_MS),
                };
          const attempt = await runCli(sourceId, seed, kill, chainsOf(run), TOPUP_BASE);
          if (attempt.killedAtMs === null) {
            expect(attempt.code, attempt.stdout + attempt.stderr).toBe(0);
            break;
          }
          kills++;
          const c = await sourceCounts(sql, sourceId);
          expect(c.rows).toBe(c.distinctIds);
          expect(c.rows).toBe(c.checkpoint?.eventsInserted ?? 0);
          if (c.checkpoint && c.checkpoint.status !== 'complete') killsMidWalk++;
        }
        const final = await runCli(sourceId, seed, null, chainsOf(run), TOPUP_BASE);
        expect(final.code, final.stdout + final.stderr).toBe(0);
        const summary = JSON.parse(final.stdout.trim().split('\n').at(-1) ?? '{}') as {
          status: string;
          verified: boolean;
          expectedEvents: number;
        };
        expect(summary).toMatchObject({ status: 'complete', verified: true, expectedEvents: total });
        const c = await sourceCounts(sql, sourceId);
        expect(c.rows).toBe(total);
        expect(c.distinctIds).toBe(total);
        expect(c.checkpoint?.eventsInserted).toBe(total);
        expect(c.checkpoint?.leaseOwner ?? null).toBeNull();
        // The mark is the grown data set's newest instant, and no top-up is left open.
        const grown = createDataset({ events: TOPUP_BASE, seed });
        grown.grow(TOPUP_GROWTH);
        const [head] = await sql<{ hwm: string | null; signpost: string | null; floors: number }[]>`
          select (extract(epoch from hwm_ts) * 1000)::bigint::text as hwm, topup_signpost_ts::text as signpost,
            (select count(*)::int from checkpoints where (source_id = ${sourceId} or chain_of = ${sourceId}) and topup_floor_ts is not null) as floors
          from checkpoints where source_id = ${sourceId}`;
        expect(Number(head?.hwm)).toBe(grown.timestampAt(0));
        expect(head?.signpost).toBeNull();
        expect(head?.floors).toBe(0);
        stored += c.rows;
        duplicates += c.rows - c.distinctIds;
      }
      report('crash-anywhere-topup', {
        runs: TOPUP_RUNS,
        faults: { sigkills: kills, killsDuringTopUp: killsMidWalk },
        expected: TOPUP_RUNS * (TOPUP_BASE + TOPUP_NEW),
        stored,
        duplicates,
        rejects: 0,
        seed: SEED,
      });
      expect(killsMidWalk).toBeGreaterThanOrEqual(1);
    },
    sized(20 * 60_000, 600_000),
  );
});

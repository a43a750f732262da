import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createSql } from '#shared/db/client.ts';
import {
  type EmbeddedPostgresHandle,
  freePort,
  startEmbeddedPostgres,
} from '../../local/embedded-postgres.ts';
import { parseLocalRunArgs } from '../../local/run/options.ts';
import { type LocalRunSummary, runLocal } from '../../local/run/runner.ts';
import { report, SCALE, sized, sleep, sourceCounts } from './support.ts';

const EVENTS = sized(200_000, 30_000);
const RESTARTS = sized(3, 1);
const DOWN_MS = 1_500;
// Small pages: many page transactions for the restart to land in.
const PAGE_SIZE = 1000;
const PAGES = EVENTS / PAGE_SIZE;

const dataDir = mkdtempSync(join(tmpdir(), 'dsi-rel-pg-'));
// As root the server runs as the OS user `postgres`, which must be able to enter the folder.
chmodSync(dataDir, 0o755);
let pg: EmbeddedPostgresHandle | null = null;

afterAll(async () => {
  await pg?.stop().catch(() => undefined);
  rmSync(dataDir, { recursive: true, force: true });
});

describe(`PostgreSQL restarted during a run (${SCALE})`, () => {
  it(
    `${RESTARTS} restart(s) of the database during a ${EVENTS.toLocaleString('en-US')}-event run end exact`,
    async () => {
      const port = await freePort();
      pg = await startEmbeddedPostgres({ dataDir: join(dataDir, 'pg'), port });
      const options = parseLocalRunArgs([
        '--database-url',
        pg.url,
        '--events',
        String(EVENTS),
        '--rate-limit',
        '0',
        // One chain: the restart must land in a run that is still going (chains finish sooner).
        '--chains',
        '1',
        '--min-spacing-ms',
        '0',
        // Time scale 2 shortens the state machine's retry interval to 1 s, so its 8 attempts
        // span a restart; the simulator has no rate limit, so nothing else changes.
        '--time-scale',
        '2',
        '--latency-ms',
        '200',
        '--source',
        'pg-restart',
        '--data-dir',
        join(dataDir, 'run'),
        '--progress',
        'none',
      ]);
      if (options === 'help') throw new Error('unexpected --help');

      const io = { out: () => {}, err: () => {}, progressMode: 'none' as const, pageSize: PAGE_SIZE };
      // The run's log (the handler's lines, of every run of the source) paces the restarts and
      // says how they surfaced.
      const logFile = join(dataDir, 'run', 'logs', 'pg-restart.log');
      const logLines = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n') : []);
      const pagesStored = () => logLines().filter((l) => l.includes('"message":"page stored"')).length;

      const runs: LocalRunSummary[] = [];
      let restarts = 0;
      let finished = false;
      let restarting: Promise<void> = Promise.resolve();
      // Each restart at a share of the pages, not after a fixed time: a run is 2 to 10 s
      // depending on the machine's load, and a restart after it, or in its final count, tests
      // nothing (it failed the scenario that way).
      const restarter = (async () => {
        for (let r = 0; r < RESTARTS; r++) {
          const at = Math.round(((r + 1) * PAGES) / (RESTARTS + 1));
          while (pagesStored() < at) {
            if (finished) return;
            await sleep(20);
          }
          restarting = (async () => {
            await pg?.stop();
            await sleep(DOWN_MS);
            pg = await startEmbeddedPostgres({ dataDir: join(dataDir, 'pg'), port });
          })();
          await restarting;
          restarts++;
        }
      })();
      try {
        runs.push(await runLocal(options, io));
        // A run that gave up while the database was down must complete when started again,
        // once the server is back.
        while (runs.at(-1)?.status !== 'complete' && runs.length < RESTARTS + 2) {
          await restarting;
          runs.push(await runLocal(options, io));
        }
      } finally {
        finished = true;
      }
      await restarter;
      const failures = logLines()
        .filter((l) => l.includes('"level":"ERROR"'))
        .map((l) => String((JSON.parse(l) as { errorName?: unknown }).errorName));
      expect(failures.length).toBeGreaterThan(0);
      const outcome =
        runs.length === 1
          ? 'recovered in-run (DatabaseUnavailableError retried)'
          : 'stopped, completed on restart';
      const last = runs.at(-1)!;
      expect(last.status, JSON.stringify(runs.map((r) => r.error ?? r.status))).toBe('complete');
      expect(last.verified).toBe(true);

      const sql = createSql(pg.url, { applicationName: 'datasync-reliability' });
      try {
        const c = await sourceCounts(sql, 'pg-restart');
        expect(c.rows).toBe(EVENTS);
        expect(c.distinctIds).toBe(EVENTS);
        expect(c.checkpoint?.eventsInserted).toBe(EVENTS);
        expect(c.checkpoint?.status).toBe('complete');
        expect(restarts).toBe(RESTARTS);
        report('postgres-restart', {
          runs: runs.length,
          faults: { restarts, downMs: DOWN_MS },
          outcome,
          failedSteps: failures.length,
          failedStepErrors: [...new Set(failures)],
          errors: runs.flatMap((r) => (r.error ? [`${r.error.name}: ${r.error.message.slice(0, 160)}`] : [])),
          expected: EVENTS,
          stored: c.rows,
          duplicates: c.rows - c.distinctIds,
          rejects: c.rejectedRows,
        });
      } finally {
        await sql.end({ timeout: 5 });
      }
    },
    // A run recovers within seconds of the restart: a step that hung on its database connection
    // (#10, postgres.js kept the dead session's state: scripts/patch-postgres.mjs) must fail the
    // scenario, not be waited out.
    sized(15 * 60_000, 90_000),
  );
});

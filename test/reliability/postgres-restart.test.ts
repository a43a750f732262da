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

      let started = false;
      const io = {
        out: (t: string) => {
          if (t.startsWith('logs: ')) started = true;
        },
        err: () => {},
        progressMode: 'none' as const,
        // Small pages: many page transactions for the restart to land in.
        pageSize: 1000,
      };
      const runs: LocalRunSummary[] = [];
      let restarts = 0;
      const restarter = (async () => {
        while (!started) await sleep(50);
        for (let r = 0; r < RESTARTS; r++) {
          await sleep(sized(4_000, 1_500));
          await pg?.stop();
          await sleep(DOWN_MS);
          pg = await startEmbeddedPostgres({ dataDir: join(dataDir, 'pg'), port });
          restarts++;
        }
      })();
      runs.push(await runLocal(options, io));
      await restarter;
      // A run that gave up while the database was down must complete when started again.
      while (runs.at(-1)?.status !== 'complete' && runs.length < RESTARTS + 2) {
        runs.push(await runLocal(options, io));
      }
      // The handler's own log says whether the restart hit the run (and how it surfaced).
      const logFile = join(dataDir, 'run', 'logs', 'pg-restart.log');
      const failures = (existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n') : [])
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
    // Reduced size: 240 s, not 90: twice in full npm test runs a step stalled after the restart
    // (cause not yet found, see #10); the function timeout (60 s) and its retry must fit.
    sized(15 * 60_000, 240_000),
  );
});

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataset } from '#local/simulator/index.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { lastJson, lines, readSource, runCli, startCli, waitForSource } from './support.ts';

// The synthesized state machine, run by the CLI as a child process against the real PostgreSQL and
// the simulator over HTTP. Time-scaled so the default 10-per-20 s limit is a 10-per-0.4 s limit.
let db: TestDatabase;
// A child process that ingests tens of pages: minutes of room on a machine shared with other work.
const E2E_TIMEOUT_MS = 300_000;
let dataDir: string;

beforeAll(async () => {
  db = await createTestDatabase('dsi_local_run');
  dataDir = mkdtempSync(join(tmpdir(), 'dsi-local-run-'));
});

afterAll(async () => {
  await db?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('npm run local, end to end', () => {
  const paced = (source: string) => [
    '--latency-ms',
    '0',
    '--chains',
    '1',
    '--events',
    '100000',
    '--time-scale',
    '50',
    // No client-side spacing: the pacing comes from the rate-limit headers, 429s and Wait states.
    '--min-spacing-ms',
    '0',
    '--max-iterations',
    '3',
    '--source',
    source,
    '--database-url',
    db.url,
    '--data-dir',
    dataDir,
    '--json',
  ];

  it(
    'stores 100,000 events exactly once across several continue-as-new executions under the time-scaled rate limit',
    async () => {
      const result = await runCli(paced('paced'));
      expect(result.code, result.stderr).toBe(0);
      const summary = lastJson(result.stdout);
      expect(summary).toMatchObject({
        status: 'complete',
        sourceId: 'paced',
        events: 100_000,
        distinctIds: 100_000,
        rejected: 0,
        pages: 20,
        expectedEvents: 100_000,
        verified: true,
      });
      expect(summary.executions).toBeGreaterThanOrEqual(3);
      // 20 pages at 3 iterations each need at least 7 executions; 429 iterations only add to that.
      expect(summary.executions).toBeGreaterThanOrEqual(7);
      expect(summary.requests).toBe(20 + summary.rateLimited);
      expect(result.stderr.trim()).toBe('');

      // Every id of the data set, each once.
      const dataset = createDataset({ events: 100_000, seed: 1 });
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      try {
        const rows = await sql<{ id: string }[]>`select id from events where source_id = 'paced'`;
        const stored = new Set(rows.map((r) => r.id));
        expect(rows.length).toBe(100_000);
        expect(stored.size).toBe(100_000);
        let missing = 0;
        for (let i = 0; i < dataset.total; i++) if (!stored.has(dataset.idAt(i))) missing++;
        expect(missing).toBe(0);
      } finally {
        await sql.end();
      }
      const state = await readSource(db.url, 'paced');
      expect(state.checkpoint).toMatchObject({
        status: 'complete',
        eventsInserted: 100_000,
        leaseOwner: null,
      });

      // The log holds the function's lines for the source.
      const log = readFileSync(join(dataDir, 'logs', 'paced.log'), 'utf8');
      expect(log).toContain('"level":"INFO"');

      // Not a terminal: plain lines, no carriage returns or escape codes.
      expect(result.stdout).not.toContain('\r');
      expect(result.stdout).not.toContain(String.fromCharCode(27));
      const known =
        /^(simulator: |logs: |progress: |verifying: |status: |events stored: |duplicates skipped: |pages: |chains: |verification: |\{)/;
      for (const line of lines(result.stdout)) expect(line).toMatch(known);
      expect(result.stdout).toContain('verification: OK');
      // The wait between the last page and the summary is the verification, and it says so.
      expect(result.stdout).toMatch(
        /progress: 100\.0%[^\n]*\nverifying: counting the rows stored for "paced"/,
      );
    },
    E2E_TIMEOUT_MS,
  );

  it(
    'tops up a complete source: one request, nothing new stored',
    async () => {
      const result = await runCli(paced('paced'));
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toContain(
        'source "paced" is complete (100,000 events stored, high-water mark its newest stored event): topping up what arrived since',
      );
      expect(result.stdout).toContain('top-up: +0 events in 1 request(s), high-water mark ');
      expect(lastJson(result.stdout)).toMatchObject({
        status: 'complete',
        events: 100_000,
        executions: 1,
        verified: true,
        topUp: { newEvents: 0, requests: 1, lateBeyondLookback: 0 },
      });
      expect((await readSource(db.url, 'paced')).events).toBe(100_000);
    },
    E2E_TIMEOUT_MS,
  );

  it(
    'refuses a second concurrent run on the same source in one line, and the first then completes',
    async () => {
      const args = [
        '--chains',
        '1',
        '--events',
        '50000',
        '--time-scale',
        '2',
        // The events table keys rows by event id alone: another seed keeps this data set apart from "paced".
        '--seed',
        '2',
        '--source',
        'shared',
        '--database-url',
        db.url,
        '--data-dir',
        dataDir,
        '--json',
      ];
      // Pages of 10 s (latency 20 s at time-scale 2): the first run holds the lease however long the
      // second takes to start on a busy machine, until it is stopped below.
      const first = startCli([...args, '--latency-ms', '20000']);
      await waitForSource(
        db.url,
        'shared',
        (s) => s.checkpoint?.leaseOwner != null && s.checkpoint.pages >= 1,
        first,
      );
      const second = await runCli(args);
      const atRefusal = await readSource(db.url, 'shared');
      expect(second.code).toBe(1);
      expect(lines(second.stderr)).toHaveLength(1);
      expect(second.stderr).toMatch(/^error: Source "shared" is being ingested by another run \(local:/);
      expect(second.stderr).toContain('run this command again');
      expect(lastJson(second.stdout)).toMatchObject({ status: 'failed', error: { name: 'LeaseHeldError' } });
      expect(atRefusal.checkpoint?.status).toBe('running');
      expect(atRefusal.checkpoint?.leaseOwner).toContain(`:${first.pid}:`);

      first.child.kill('SIGINT');
      expect((await first.done).code).toBe(130);
      const done = await runCli(args);
      expect(done.code, `${done.stdout}\n${done.stderr}`).toBe(0);
      expect(lastJson(done.stdout)).toMatchObject({
        status: 'complete',
        events: 50_000,
        distinctIds: 50_000,
        verified: true,
      });
      const state = await readSource(db.url, 'shared');
      expect(state.events).toBe(50_000);
      expect(state.distinctIds).toBe(50_000);
    },
    E2E_TIMEOUT_MS,
  );
});

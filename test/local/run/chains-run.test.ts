import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { lastJson, readSource, runCli } from './support.ts';

// `npm run local` with three cursor chains through the synthesized state machine (Plan, the Map,
// Replan, continue-as-new), the real handler, PostgreSQL and the simulator over HTTP, time-scaled.
let db: TestDatabase;
let dataDir: string;

beforeAll(async () => {
  db = await createTestDatabase('dsi_local_chains');
  dataDir = mkdtempSync(join(tmpdir(), 'dsi-local-chains-'));
});

afterAll(async () => {
  await db?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('npm run local with cursor chains', () => {
  it('continues each chain as a new execution past its share of the history and ends exact', async () => {
    const result = await runCli([
      '--events',
      '100000',
      '--chains',
      '3',
      // The live latency, scaled: each 5000-event page takes 70-80 ms, longer than the 44 ms spacing.
      '--latency-ms',
      'live',
      '--time-scale',
      '50',
      // 9 iterations per execution over 3 chains: each chain pauses after 3, Replan continues as new.
      '--max-iterations',
      '9',
      '--source',
      'chained',
      '--database-url',
      db.url,
      '--data-dir',
      dataDir,
      '--json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    const summary = lastJson(result.stdout);
    expect(summary).toMatchObject({
      status: 'complete',
      events: 100_000,
      distinctIds: 100_000,
      rateLimited: 0,
      chains: 3,
      chainMode: 'chains',
      verified: true,
    });
    // 20 pages and more at 3 per chain per execution: at least two continue-as-new.
    expect(summary.executions).toBeGreaterThanOrEqual(3);
    const state = await readSource(db.url, 'chained');
    expect(state.checkpoint).toMatchObject({ status: 'complete', leaseOwner: null });
    const log = readFileSync(join(dataDir, 'logs', 'chained.log'), 'utf8');
    // Every chain stored pages, and the plan said why three.
    for (const chain of [0, 1, 2]) expect(log).toContain(`"chain":${chain},`);
    expect(log).toContain('"message":"planned chains"');
  }, 300_000);
});

import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runChains } from '#bench/pacer-sim.ts';
import { DEFAULT_API_KEY, startSimulator } from '#local/simulator/index.ts';
import { createDb, createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

/*
 * End to end: N concurrent loops, each reserve -> sleep until the reserved start -> GET from the
 * real simulator over HTTP -> record the answer, through the real pacer row in PostgreSQL.
 * Time-scaled (a 20 s window becomes 0.5 s). Asserts behaviour only: no 429 and the spacing of
 * the reserved starts; throughput is measured by `npm run bench -- pacer`.
 */

let testDb: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  testDb = await createTestDatabase('dsi_pacer_e2e');
  sql = createSql(testDb.url, { max: 6 });
  await runMigrations(sql);
});
afterAll(async () => {
  await sql?.end({ timeout: 5 });
  await testDb.drop();
});

const SCALE = 40;
const ROWS = 100;
const cases: { chains: number; windowMode: 'fixed' | 'sliding'; latencyMs: number }[] = [];
for (const chains of [1, 3, 4])
  for (const windowMode of ['fixed', 'sliding'] as const) cases.push({ chains, windowMode, latencyMs: 3500 });
cases.push({ chains: 3, windowMode: 'sliding', latencyMs: 0 });

describe('N chains through the shared pacer against the simulator', () => {
  it.each(cases)('N=$chains $windowMode latency $latencyMs ms: 0 x 429, starts spaced', async (c) => {
    const sim = await startSimulator({
      port: 0,
      events: 1000,
      rateLimit: 10,
      windowSeconds: 20,
      windowMode: c.windowMode,
      timeScale: SCALE,
      latencyMs: (c.latencyMs * 5000) / ROWS,
      latencyJitterMs: 0,
    });
    try {
      const minSpacingMs = 2200 / SCALE;
      const out = await runChains({
        db: createDb(sql),
        key: `e2e-${c.chains}-${c.windowMode}-${c.latencyMs}`,
        eventsUrl: `${sim.url}/events?limit=${ROWS}`,
        apiKey: DEFAULT_API_KEY,
        chains: c.chains,
        requests: 35,
        minSpacingMs,
        // Wide enough for a loaded 2-core machine: this test is about safety, not speed.
        safetyMarginMs: 40,
        maxAheadMs: 1000,
      });
      expect(out.records).toHaveLength(35);
      expect(out.rateLimited).toBe(0);
      expect(sim.stats().rateLimited).toBe(0);
      for (let i = 1; i < out.records.length; i++) {
        expect(out.records[i]!.reservedAtMs - out.records[i - 1]!.reservedAtMs).toBeGreaterThanOrEqual(
          minSpacingMs,
        );
      }
      for (const r of out.records) expect(r.sentAtMs).toBeGreaterThanOrEqual(r.reservedAtMs);
      // More than three windows' worth: the window budget was exercised, not just the spacing.
      expect(new Set(out.records.map((r) => r.chain)).size).toBe(c.chains);
    } finally {
      await sim.close();
    }
  });
});

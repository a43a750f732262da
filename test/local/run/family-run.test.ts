import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localRunOptionsSchema } from '#local/run/options.ts';
import { runLocal } from '#local/run/runner.ts';
import { FAMILY_NAMES } from '#local/simulator/family.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

/*
 * The whole pipeline (the synthesized state machine, the real handler, the shared pacer in
 * PostgreSQL) against each named member of the upstream family (local/simulator/family.ts),
 * time-scaled and short: 6 pages of 1000 events, the live latency (so the Plan splits the source
 * into chains), 10 % of answers a 503. Every member must end exact, with no 429 (every request is
 * ours: any 429 would be self-caused). Speed against each member: `npm run bench -- floor --family`.
 */

let db: TestDatabase;
let dataDir: string;
beforeAll(async () => {
  db = await createTestDatabase('dsi_family_run');
  dataDir = mkdtempSync(join(tmpdir(), 'dsi-family-run-'));
});
afterAll(async () => {
  await db?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

const quiet = { out: () => undefined, err: () => undefined, progressMode: 'none' as const, pageSize: 1000 };

describe('npm run local against each member of the upstream family', () => {
  it.each(FAMILY_NAMES.map((name, i) => ({ name, i })))(
    '$name: exact, 0 x 429',
    async ({ name, i }) => {
      const options = localRunOptionsSchema.parse({
        databaseUrl: db.url,
        apiUrl: null,
        apiKey: null,
        events: 6_000,
        windowSeconds: 20,
        rateLimit: 10,
        windowMode: 'fixed',
        timeScale: 40,
        // A 1000-event page takes a fifth of a 5000-event one: scaled up, it takes the live 3.5-4 s.
        latencyMs: 3500 * 5,
        chaos: false,
        seed: 100 + i,
        sourceId: `family-${name}`,
        reset: true,
        json: false,
        maxIterations: 1000,
        chains: 'auto',
        minSpacingMs: 2200,
        dataDir,
        progress: 'none',
      });
      const summary = await runLocal(options, {
        ...quiet,
        simulator: { family: name, transientErrorRate: 0.1 },
      });
      expect(summary, summary.error ? `${summary.error.name}: ${summary.error.message}` : '').toMatchObject({
        status: 'complete',
        verified: true,
        rateLimited: 0,
      });
      expect(summary.events).toBe(summary.expectedEvents ?? summary.events);
    },
    120_000,
  );
});

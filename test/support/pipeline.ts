import type { Sql } from 'postgres';
import { configDefaults } from '#shared/config.ts';
import { createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { createStore } from '#shared/db/store.ts';
import type { Clock, StepDeps, StepOutput, StepStore } from '#shared/step/index.ts';
import { createDataSyncClient } from '#shared/upstream/client.ts';
import {
  type RunningSimulator,
  type SimulatorOptionsInput,
  startSimulator,
} from '../../local/simulator/index.ts';
import { createTestDatabase, type TestDatabase } from './db.ts';
import { stepPage } from './step.ts';

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

/** Log lines captured per test, so a test can assert on what the step said (and did not say). */
export interface CapturedLog {
  level: string;
  message: string;
  fields?: Record<string, unknown>;
}

export interface PipelineFixture {
  db: TestDatabase;
  sql: Sql;
  sim: RunningSimulator;
  logs: CapturedLog[];
  deps(overrides?: { store?: StepStore; apiKey?: string; config?: Partial<StepDeps['config']> }): StepDeps;
  /** Calls the step until `done` (or `maxSteps`), as the state machine would (Wait skipped: spacing 0). */
  runToDone(
    executionId: string,
    opts?: { sourceId?: string; maxSteps?: number; deps?: StepDeps },
  ): Promise<StepOutput[]>;
  close(): Promise<void>;
}

/** A throw-away database with the schema, and a simulator on 127.0.0.1 (no rate limit unless asked). */
export async function createPipelineFixture(sim: SimulatorOptionsInput = {}): Promise<PipelineFixture> {
  const db = await createTestDatabase('dsi_step');
  const sql = createSql(db.url, { applicationName: 'datasync-test' });
  await runMigrations(sql);
  // No latency unless a test asks: the simulator's own default is the live service's 3.5 s a page.
  const simulator = await startSimulator({ port: 0, rateLimit: 0, latencyMs: 0, ...sim });
  const logs: CapturedLog[] = [];
  const log = (level: string) => (message: string, fields?: Record<string, unknown>) =>
    logs.push({ level, message, ...(fields ? { fields } : {}) });
  const deps: PipelineFixture['deps'] = (overrides = {}) => ({
    store: overrides.store ?? createStore(sql, { pacerKey: simulator.url }),
    upstream: createDataSyncClient({
      baseUrl: simulator.url,
      apiKey: overrides.apiKey ?? simulator.options.apiKey,
      timeoutMs: 10_000,
    }),
    clock: realClock,
    logger: { info: log('info'), warn: log('warn'), error: log('error') },
    metrics: { add: () => {} },
    config: {
      ...configDefaults,
      pageSize: 5000,
      minSpacingMs: 0,
      retryBudgetMs: 5_000,
      maxInTaskSleepMs: 3_000,
      leaseTtlMs: 60_000,
      random: () => 0.01,
      ...overrides.config,
    },
  });
  return {
    db,
    sql,
    sim: simulator,
    logs,
    deps,
    async runToDone(executionId, opts = {}) {
      const d = opts.deps ?? deps();
      const outputs: StepOutput[] = [];
      let state: Record<string, unknown> = { sourceId: opts.sourceId ?? 'default' };
      for (let i = 0; i < (opts.maxSteps ?? 1000); i++) {
        const out = await stepPage(d, { executionId, state });
        outputs.push(out);
        if (out.done) return outputs;
        state = out;
        if (out.waitSeconds > 0 || out.skipped) await realClock.sleep(Math.min(out.waitSeconds * 1000, 2000));
      }
      throw new Error(`not done after ${opts.maxSteps ?? 1000} steps`);
    },
    async close() {
      await simulator.close();
      await sql.end({ timeout: 5 });
      await db.drop();
    },
  };
}

/** Rows of a source as (id, epoch ms) pairs. */
export async function storedInstants(sql: Sql, sourceId = 'default'): Promise<Map<string, number>> {
  const rows = await sql<{ id: string; ms: string }[]>`
    select id::text as id, (extract(epoch from occurred_at) * 1000)::bigint::text as ms
    from events where source_id = ${sourceId}`;
  return new Map(rows.map((r) => [r.id, Number(r.ms)]));
}

import type { Sql } from 'postgres';
import { DataSyncError } from '#shared/errors.ts';
import type { StepDeps, StepOutput } from '#shared/step/index.ts';
import { stepPage } from '#test/support/step.ts';

/** `full` under `npm run test:reliability`; the reduced default keeps `npm test` short. */
export const SCALE: 'full' | 'reduced' = process.env.RELIABILITY_SCALE === 'full' ? 'full' : 'reduced';

export function sized<T>(full: T, reduced: T): T {
  return SCALE === 'full' ? full : reduced;
}

/** A seeded PRNG (mulberry32): a failing scenario can be replayed from the seed it printed. */
export { seededRandom } from '#bench/random.ts';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface ScenarioFigures {
  runs: number;
  faults: number | Record<string, number>;
  expected: number;
  stored: number;
  duplicates: number;
  rejects: number;
  [extra: string]: unknown;
}

/** The one-line summary each scenario prints, so CI logs show the figures behind the verdict. */
export function report(scenario: string, figures: ScenarioFigures): void {
  console.log(`[reliability:${SCALE}] ${scenario} ${JSON.stringify(figures)}`);
}

export interface SourceCounts {
  rows: number;
  distinctIds: number;
  rejectedRows: number;
  checkpoint: {
    status: string;
    pages: number;
    eventsInserted: number;
    duplicatesSkipped: number;
    rejected: number;
    requests: number;
    rateLimited: number;
    positionId: string | null;
    cursor: string | null;
    lastError: string | null;
    leaseOwner: string | null;
    chainMode: string | null;
    chains: number;
  } | null;
}

/** What the tables say about a source: the verdict never trusts the run's own summary alone. */
export async function sourceCounts(sql: Sql, sourceId: string): Promise<SourceCounts> {
  const [ev] = await sql<{ rows: number; distinct: number }[]>`
    select count(*)::int as rows, count(distinct id)::int as distinct from events where source_id = ${sourceId}`;
  const [rj] = await sql<{ rows: number }[]>`
    select count(*)::int as rows from rejected_events where source_id = ${sourceId}`;
  // Counters summed over the source's own row and its chains' rows; the rest is the source row's.
  const [cp] = await sql<NonNullable<SourceCounts['checkpoint']>[]>`
    select s.status, s.position_id as "positionId", s.cursor, s.last_error as "lastError",
           s.lease_owner as "leaseOwner", s.chain_mode as "chainMode",
           t.pages, t."eventsInserted", t."duplicatesSkipped", t.rejected, t.requests, t."rateLimited", t.chains
    from checkpoints s,
         lateral (select sum(pages)::int as pages, sum(events_inserted)::int as "eventsInserted",
                         sum(duplicates_skipped)::int as "duplicatesSkipped", sum(rejected)::int as rejected,
                         sum(requests)::int as requests, sum(rate_limited)::int as "rateLimited",
                         count(*)::int as chains
                  from checkpoints c where c.source_id = s.source_id or c.chain_of = s.source_id) t
    where s.source_id = ${sourceId}`;
  return {
    rows: ev?.rows ?? 0,
    distinctIds: ev?.distinct ?? 0,
    rejectedRows: rj?.rows ?? 0,
    checkpoint: cp ?? null,
  };
}

export interface DriveResult {
  outputs: number;
  /** Transient errors the driver retried, by name (the state machine's Retry does the same). */
  retried: Record<string, number>;
  rateLimitedSteps: number;
  last: StepOutput;
}

/**
 * Calls the step until done, the way the synthesized state machine does: the step's output is
 * the next input, its waitSeconds is honoured (capped, to keep scenarios short), a transient
 * named error is retried and a fatal one ends the run (it is rethrown).
 */
export async function driveToDone(
  deps: StepDeps,
  opts: {
    executionId: string;
    sourceId: string;
    maxSteps?: number;
    maxWaitMs?: number;
    retryDelayMs?: number;
    /** Called after each successful step, e.g. to pause the run at a chosen page. */
    afterStep?: (out: StepOutput, index: number) => Promise<void>;
  },
): Promise<DriveResult> {
  const retried: Record<string, number> = {};
  let rateLimitedSteps = 0;
  let state: Record<string, unknown> = { sourceId: opts.sourceId };
  const maxSteps = opts.maxSteps ?? 10_000;
  let consecutiveFailures = 0;
  for (let i = 0; i < maxSteps; i++) {
    let out: StepOutput;
    try {
      out = await stepPage(deps, { executionId: opts.executionId, state });
      consecutiveFailures = 0;
    } catch (error) {
      const transient =
        (error instanceof DataSyncError && error.transient) ||
        (error instanceof Error && error.name === 'DatabaseUnavailableError');
      if (!transient || ++consecutiveFailures > 20) throw error;
      const name = (error as Error).name;
      retried[name] = (retried[name] ?? 0) + 1;
      await sleep(opts.retryDelayMs ?? 50);
      continue;
    }
    if (out.skipped === 'rate-limited') rateLimitedSteps++;
    if (out.done) return { outputs: i + 1, retried, rateLimitedSteps, last: out };
    await opts.afterStep?.(out, i);
    state = out;
    if (out.waitSeconds > 0) await sleep(Math.min(out.waitSeconds * 1000, opts.maxWaitMs ?? 1_000));
  }
  throw new Error(`source "${opts.sourceId}" not done after ${maxSteps} steps: the run loops`);
}

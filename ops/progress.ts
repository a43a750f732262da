import { GetExecutionHistoryCommand, type HistoryEvent } from '@aws-sdk/client-sfn';
import { z } from 'zod';
import type { ChainView, StatusView } from '#shared/status/view.ts';
import { findExecutions, type SfnDeps, type Target } from './executions.ts';

/*
 * `npm run ingest -- status`: a source's progress from its execution's history (the task
 * outputs) and, when a reader is given, from its checkpoint.
 */

/** What the operator's progress view needs from the checkpoint (read by the caller's DB layer). */
export interface CheckpointView {
  eventsInserted: number;
  pages: number;
  totalReported: number | null;
  status: string;
  lastError: string | null;
  updatedAtMs: number;
  /** 429s answered so far (the status function and the database reader give it). */
  rateLimited?: number;
  /** Conflicting duplicates: ids sent again with other content (table event_conflicts). */
  conflicts?: number;
  /** The newest rate-limit headers the upstream sent. */
  lastRateLimit?: { limit: number; remaining: number; resetSeconds: number } | null;
  /** When the function will next call the upstream, epoch ms. */
  nextRequestAtMs?: number | null;
  /** How the source is read: one chain, several, or back to one after a refusal (null: not planned yet). */
  mode?: 'single' | 'chains' | 'fallback' | null;
  /** Why one chain, or why the fallback. */
  note?: string | null;
  /** One entry per cursor chain; the counters above are their sums. */
  chains?: ChainView[];
  /** The high-water mark and the last top-up (shared/status/view.ts). */
  topUp?: StatusView['topUp'];
}

export interface IngestDeps extends SfnDeps {
  readCheckpoint?: (sourceId: string) => Promise<CheckpointView | null>;
}

/** The fetch-page output as far as status needs it (the state machine's output and each task's). */
const stepOutputSchema = z
  .object({
    sourceId: z.string(),
    done: z.boolean(),
    page: z.object({ inserted: z.number() }).loose(),
    totals: z.object({ pages: z.number(), inserted: z.number() }).loose(),
    iteration: z.number(),
    /** The chain the page belongs to (absent before chains existed); its totals are that chain's. */
    chain: z.number().optional(),
  })
  .loose();
type StepOutputView = z.infer<typeof stepOutputSchema>;

/** The Plan task's output: the source's totals summed over its chains when it ran. */
const planOutputSchema = z
  .object({
    sourceId: z.string(),
    done: z.boolean(),
    mode: z.string(),
    chains: z.array(z.unknown()),
    totals: z.object({ pages: z.number(), inserted: z.number() }).loose(),
  })
  .loose();

/**
 * A task output whose totals speak for the whole source: a Plan output, or a page of a source
 * read by one chain. With several chains a page's totals are its chain's alone.
 */
interface SourceWideOutput {
  totals: { pages: number; inserted: number };
  /** Events stored before this output's own page (the Plan stores none). */
  insertedBefore: number;
  /** A Plan output: its mode tells whether the pages that follow speak for the source. */
  planMode: string | null;
  /** The output says the source is complete: its totals are final. */
  done: boolean;
}

export interface StatusReport {
  sourceId: string;
  execution: {
    arn: string;
    status: string;
    startedAtMs: number | null;
    stoppedAtMs: number | null;
    error: string | null;
    cause: string | null;
  } | null;
  /**
   * The newest fetch-page output of the execution (or the execution's output once it has ended).
   * With several chains, its totals are its own chain's.
   */
  latest: StepOutputView | null;
  /**
   * The source's totals from the newest task output that speaks for the whole source; `fromPlan`:
   * from a Plan, that is as of the start of the execution's round (the chains' pages since are
   * in the checkpoint, which the status function reads).
   */
  totals: { pages: number; inserted: number; fromPlan: boolean } | null;
  /** Events inserted during this execution per second, from its first and latest step outputs. */
  eventsPerSecond: number | null;
  checkpoint: CheckpointView | null;
  /** Seconds until all `totalReported` events are in, at the current rate. */
  etaSeconds: number | null;
}

function parseJson(raw: string | undefined): unknown {
  if (!raw) return null;
  try {
    return JSON.parse(raw);
  } catch {
    return null;
  }
}

function parseStepOutput(raw: string | undefined): StepOutputView | null {
  const parsed = stepOutputSchema.safeParse(parseJson(raw));
  return parsed.success ? parsed.data : null;
}

/** The output as source-wide totals, or null (not a task output, or one chain's page of several). */
function sourceWide(raw: string | undefined, planMode: string | null): SourceWideOutput | null {
  const json = parseJson(raw);
  const plan = planOutputSchema.safeParse(json);
  if (plan.success) {
    return {
      totals: plan.data.totals,
      insertedBefore: plan.data.totals.inserted,
      planMode: plan.data.mode,
      done: plan.data.done,
    };
  }
  const step = stepOutputSchema.safeParse(json);
  // A page speaks for the source when no plan split it: no chain field (before chains), or a
  // plan that chose one chain. After a fallback the other chains' rows still hold their counts.
  if (!step.success || (step.data.chain !== undefined && planMode !== 'single')) return null;
  return {
    totals: step.data.totals,
    insertedBefore: step.data.totals.inserted - step.data.page.inserted,
    planMode: null,
    done: step.data.done,
  };
}

function outputOf(event: HistoryEvent): string | undefined {
  return event.lambdaFunctionSucceededEventDetails?.output ?? event.taskSucceededEventDetails?.output;
}

interface HistoryProgress {
  /** The execution's first task output that speaks for the source, and when it came. */
  first: { output: SourceWideOutput; atMs: number } | null;
  /** The newest one. */
  latest: SourceWideOutput | null;
  /** The newest page of any chain (its totals are the chain's when the source runs several). */
  latestPage: StepOutputView | null;
}

async function historyProgress(deps: IngestDeps, executionArn: string): Promise<HistoryProgress> {
  const page = async (reverseOrder: boolean) =>
    (
      await deps.sfn.send(
        new GetExecutionHistoryCommand({
          executionArn,
          reverseOrder,
          maxResults: 100,
          includeExecutionData: true,
        }),
      )
    ).events ?? [];
  const newestFirst = await page(true);
  const latestPage = newestFirst.map((e) => parseStepOutput(outputOf(e))).find((o) => o !== null) ?? null;
  if (!newestFirst.some((e) => outputOf(e) !== undefined)) return { first: null, latest: null, latestPage };
  // The plan comes first in an execution: its mode says whether the pages after it speak for the source.
  let planMode: string | null = null;
  let first: HistoryProgress['first'] = null;
  for (const event of await page(false)) {
    const output = sourceWide(outputOf(event), planMode);
    if (!output) continue;
    planMode = output.planMode ?? planMode;
    if (event.timestamp) first = { output, atMs: event.timestamp.getTime() };
    break;
  }
  // Past the newest history page, the first output (the plan) is the newest that speaks for the source.
  const latest =
    newestFirst.map((e) => sourceWide(outputOf(e), planMode)).find((o) => o !== null) ??
    first?.output ??
    null;
  return { first, latest, latestPage };
}

/** The source's running (else newest) execution, its progress, and the checkpoint when a reader is given. */
export async function ingestionStatus(deps: IngestDeps, target: Target): Promise<StatusReport> {
  const [running] = await findExecutions(deps, target, { status: 'RUNNING', limit: 1 });
  const execution = running ?? (await findExecutions(deps, target, { limit: 1 }))[0];
  const checkpoint = deps.readCheckpoint ? await deps.readCheckpoint(target.sourceId) : null;
  let latest: StepOutputView | null = null;
  let eventsPerSecond: number | null = null;
  let sourceWideLatest: SourceWideOutput | null = null;
  if (execution?.executionArn) {
    const history = await historyProgress(deps, execution.executionArn);
    latest = parseStepOutput(execution.output) ?? history.latestPage;
    sourceWideLatest = sourceWide(execution.output, history.first?.output.planMode ?? null) ?? history.latest;
    // The rate needs the source's count now: the checkpoint's (summed over chains) when it was
    // read, else a newer output than the first that speaks for the whole source (the first one
    // alone is where the execution started: no rate).
    const insertedNow =
      checkpoint?.eventsInserted ??
      (sourceWideLatest !== history.first?.output ? sourceWideLatest?.totals.inserted : null) ??
      null;
    if (history.first && insertedNow !== null) {
      const endMs = execution.stopDate ? execution.stopDate.getTime() : deps.now();
      const seconds = (endMs - (execution.startDate?.getTime() ?? history.first.atMs)) / 1000;
      if (seconds > 0) eventsPerSecond = (insertedNow - history.first.output.insertedBefore) / seconds;
    }
  }
  const inserted = checkpoint?.eventsInserted ?? sourceWideLatest?.totals.inserted ?? null;
  const total = checkpoint?.totalReported ?? null;
  const etaSeconds =
    running && inserted !== null && total !== null && eventsPerSecond && eventsPerSecond > 0
      ? Math.max(0, (total - inserted) / eventsPerSecond)
      : null;
  return {
    sourceId: target.sourceId,
    execution: execution?.executionArn
      ? {
          arn: execution.executionArn,
          status: execution.status ?? 'UNKNOWN',
          startedAtMs: execution.startDate?.getTime() ?? null,
          stoppedAtMs: execution.stopDate?.getTime() ?? null,
          error: execution.error ?? null,
          cause: execution.cause ?? null,
        }
      : null,
    latest,
    totals: sourceWideLatest
      ? {
          pages: sourceWideLatest.totals.pages,
          inserted: sourceWideLatest.totals.inserted,
          fromPlan: sourceWideLatest.planMode !== null && !sourceWideLatest.done,
        }
      : null,
    eventsPerSecond,
    checkpoint,
    etaSeconds,
  };
}

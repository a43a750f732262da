import {
  DescribeExecutionCommand,
  type DescribeExecutionCommandOutput,
  type ExecutionListItem,
  type ExecutionStatus,
  GetExecutionHistoryCommand,
  type HistoryEvent,
  ListExecutionsCommand,
  type SFNClient,
  StartExecutionCommand,
  StopExecutionCommand,
} from '@aws-sdk/client-sfn';
import { z } from 'zod';
import { DataSyncError } from '#shared/errors.ts';
import type { ChainView } from '#shared/status/view.ts';

/** An execution for this source is already RUNNING: starting another would only fail on the lease. */
export class ExecutionRunningError extends DataSyncError {
  override readonly name = 'ExecutionRunningError';
  readonly transient = false;
}

/** `stop` found nothing to stop. */
export class NoRunningExecutionError extends DataSyncError {
  override readonly name = 'NoRunningExecutionError';
  readonly transient = false;
}

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
}

export interface IngestDeps {
  sfn: Pick<SFNClient, 'send'>;
  /** Epoch milliseconds. */
  now: () => number;
  readCheckpoint?: (sourceId: string) => Promise<CheckpointView | null>;
}

export interface Target {
  stateMachineArn: string;
  sourceId: string;
}

/** Executions examined when looking for a source's newest one: input is only visible per execution. */
const MAX_DESCRIBED = 100;

const executionInputSchema = z.object({ sourceId: z.string().default('default') }).loose();

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

function sourceOf(input: string | undefined): string | null {
  try {
    const parsed = executionInputSchema.safeParse(JSON.parse(input ?? '{}'));
    return parsed.success ? parsed.data.sourceId : null;
  } catch {
    return null;
  }
}

/**
 * Executions of `sourceId`, newest first. The source lives in each execution's input, so every
 * candidate is described; continue-as-new children have generated names, so names cannot filter.
 */
async function findExecutions(
  deps: IngestDeps,
  target: Target,
  options: { status?: ExecutionStatus; limit: number },
): Promise<DescribeExecutionCommandOutput[]> {
  const found: DescribeExecutionCommandOutput[] = [];
  let described = 0;
  let nextToken: string | undefined;
  do {
    const page = await deps.sfn.send(
      new ListExecutionsCommand({
        stateMachineArn: target.stateMachineArn,
        ...(options.status ? { statusFilter: options.status } : {}),
        maxResults: 50,
        nextToken,
      }),
    );
    const items: ExecutionListItem[] = page.executions ?? [];
    for (const item of items) {
      if (described >= MAX_DESCRIBED) return found;
      described++;
      const execution = await deps.sfn.send(
        new DescribeExecutionCommand({ executionArn: item.executionArn }),
      );
      if (sourceOf(execution.input) === target.sourceId) {
        found.push(execution);
        if (found.length >= options.limit) return found;
      }
    }
    nextToken = page.nextToken;
  } while (nextToken);
  return found;
}

export interface StartResult {
  executionArn: string;
  name: string;
  /** The ended execution whose lease the new one takes over, if any. */
  parentExecutionId: string | null;
}

/**
 * Starts an execution for the source unless one is RUNNING. When the newest execution has ended
 * (failed, aborted, timed out or succeeded), its ARN goes in as `parentExecutionId`, so a lease a
 * crashed execution left behind is handed over at once instead of blocking until it expires.
 */
export async function startIngestion(deps: IngestDeps, target: Target): Promise<StartResult> {
  const running = await findExecutions(deps, target, { status: 'RUNNING', limit: 1 });
  if (running[0]) {
    throw new ExecutionRunningError(
      `Source "${target.sourceId}" already has a RUNNING execution ${running[0].executionArn}. ` +
        'Watch it with `npm run ingest -- status`, or stop it with `npm run ingest -- stop` before starting again.',
    );
  }
  const [last] = await findExecutions(deps, target, { limit: 1 });
  const parentExecutionId = last && last.status !== 'RUNNING' ? (last.executionArn ?? null) : null;
  const name = `${target.sourceId}-${new Date(deps.now()).toISOString().replace(/[:.]/g, '-')}`.slice(0, 80);
  const input: Record<string, string> = { sourceId: target.sourceId };
  if (parentExecutionId) input.parentExecutionId = parentExecutionId;
  const out = await deps.sfn.send(
    new StartExecutionCommand({
      stateMachineArn: target.stateMachineArn,
      name,
      input: JSON.stringify(input),
    }),
  );
  return { executionArn: out.executionArn as string, name, parentExecutionId };
}

export interface StopResult {
  executionArn: string;
}

/** Stops the source's RUNNING execution, recording who stopped it and why. */
export async function stopIngestion(deps: IngestDeps, target: Target, cause: string): Promise<StopResult> {
  const [running] = await findExecutions(deps, target, { status: 'RUNNING', limit: 1 });
  if (!running?.executionArn) {
    throw new NoRunningExecutionError(
      `Source "${target.sourceId}" has no RUNNING execution to stop. Check the source id (--source) and the state machine ARN.`,
    );
  }
  await deps.sfn.send(
    new StopExecutionCommand({ executionArn: running.executionArn, error: 'StoppedByOperator', cause }),
  );
  return { executionArn: running.executionArn };
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

function duration(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${s % 60}s` : `${s}s`;
}

const count = (n: number) => n.toLocaleString('en-US');

const instant = (ms: number) => new Date(ms).toISOString();

/**
 * The mode line, then one line per chain: its range (newest first), where it is, what it did, and
 * whether it is done, being read (leased) or waiting for the next execution to read it.
 */
function chainLines(c: CheckpointView): string[] {
  // A status function deployed before chains sends none of this.
  if (!c.chains) return [];
  const n = c.chains.length;
  // The note is the plan's reason for its chain count, or the reason for the fallback.
  const head =
    c.mode === 'fallback'
      ? `fell back to one chain${c.note ? `: ${c.note}` : ''}`
      : c.mode
        ? `${n}, mode ${c.mode}${c.note ? ` (${c.note})` : ''}`
        : 'not planned yet (the first page plans them)';
  const lines = [`chains:     ${head}`];
  if (n === 0 || (n === 1 && c.mode !== 'chains' && c.mode !== 'fallback')) return lines;
  for (const chain of c.chains) {
    const range = `${chain.hi === null ? 'newest' : instant(chain.hi)} .. ${chain.lo === null ? 'oldest' : instant(chain.lo)}`;
    const state =
      chain.rangeDone || c.status === 'complete'
        ? 'done'
        : `${chain.leased ? 'reading' : 'waiting'}${chain.position !== null ? `, at ${instant(chain.position)}` : ''}`;
    lines.push(
      `  chain ${chain.chain}: ${range}, ${count(chain.pages)} pages, ${count(chain.inserted)} events, ${state}`,
    );
  }
  return lines;
}

/** Human-readable lines for `status`. */
export function formatStatus(report: StatusReport): string[] {
  const lines = [`source:     ${report.sourceId}`];
  const e = report.execution;
  if (!e) {
    lines.push('execution:  none found for this source (start one with `npm run ingest -- start`)');
  } else {
    lines.push(`execution:  ${e.arn}`, `state:      ${e.status}`);
    if (e.startedAtMs !== null) lines.push(`started:    ${new Date(e.startedAtMs).toISOString()}`);
    if (e.stoppedAtMs !== null) lines.push(`stopped:    ${new Date(e.stoppedAtMs).toISOString()}`);
    if (e.error) lines.push(`error:      ${e.error}${e.cause ? `: ${e.cause}` : ''}`);
  }
  const c = report.checkpoint;
  if (c) {
    const of = c.totalReported !== null ? ` of ${count(c.totalReported)}` : '';
    const pct = c.totalReported ? ` (${((100 * c.eventsInserted) / c.totalReported).toFixed(1)}%)` : '';
    lines.push(`events:     ${count(c.eventsInserted)}${of}${pct}`, `pages:      ${count(c.pages)}`);
    lines.push(...chainLines(c));
    lines.push(`checkpoint: ${c.status}, updated ${new Date(c.updatedAtMs).toISOString()}`);
    if (c.lastError) lines.push(`last error: ${c.lastError}`);
    const limit = c.lastRateLimit;
    if (limit || c.rateLimited) {
      const parts = [
        ...(limit
          ? [`${limit.remaining} of ${limit.limit} requests left, window resets in ${limit.resetSeconds}s`]
          : []),
        `${count(c.rateLimited ?? 0)} x 429 so far`,
        ...(c.nextRequestAtMs ? [`next request ${new Date(c.nextRequestAtMs).toISOString()}`] : []),
      ];
      lines.push(`rate limit: ${parts.join('; ')}`);
    }
  } else if (report.totals) {
    const asOf = report.totals.fromPlan
      ? ' when the chains were planned (--status-function gives the live count of each chain)'
      : '';
    lines.push(
      `events:     ${count(report.totals.inserted)}${asOf}`,
      `pages:      ${count(report.totals.pages)}`,
    );
  }
  if (report.eventsPerSecond !== null)
    lines.push(`rate:       ${count(Math.round(report.eventsPerSecond))} events/s`);
  if (report.etaSeconds !== null) lines.push(`eta:        ${duration(report.etaSeconds)}`);
  return lines;
}

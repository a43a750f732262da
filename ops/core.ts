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
  })
  .loose();
type StepOutputView = z.infer<typeof stepOutputSchema>;

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
  /** The newest fetch-page output of the execution (or the execution's output once it has ended). */
  latest: StepOutputView | null;
  /** Events inserted during this execution per second, from its first and latest step outputs. */
  eventsPerSecond: number | null;
  checkpoint: CheckpointView | null;
  /** Seconds until all `totalReported` events are in, at the current rate. */
  etaSeconds: number | null;
}

function parseStepOutput(raw: string | undefined): StepOutputView | null {
  if (!raw) return null;
  try {
    const parsed = stepOutputSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

function stepOutputOf(event: HistoryEvent): StepOutputView | null {
  return parseStepOutput(
    event.lambdaFunctionSucceededEventDetails?.output ?? event.taskSucceededEventDetails?.output,
  );
}

async function firstAndLatestStep(
  deps: IngestDeps,
  executionArn: string,
): Promise<{ first: { output: StepOutputView; atMs: number } | null; latest: StepOutputView | null }> {
  const find = async (reverseOrder: boolean) => {
    const page = await deps.sfn.send(
      new GetExecutionHistoryCommand({
        executionArn,
        reverseOrder,
        maxResults: 100,
        includeExecutionData: true,
      }),
    );
    for (const event of page.events ?? []) {
      const output = stepOutputOf(event);
      if (output) return { output, atMs: event.timestamp ? event.timestamp.getTime() : null };
    }
    return null;
  };
  const latest = await find(true);
  const first = latest ? await find(false) : null;
  return {
    first: first && first.atMs !== null ? { output: first.output, atMs: first.atMs } : null,
    latest: latest?.output ?? null,
  };
}

/** The source's running (else newest) execution, its progress, and the checkpoint when a reader is given. */
export async function ingestionStatus(deps: IngestDeps, target: Target): Promise<StatusReport> {
  const [running] = await findExecutions(deps, target, { status: 'RUNNING', limit: 1 });
  const execution = running ?? (await findExecutions(deps, target, { limit: 1 }))[0];
  const checkpoint = deps.readCheckpoint ? await deps.readCheckpoint(target.sourceId) : null;
  let latest: StepOutputView | null = null;
  let eventsPerSecond: number | null = null;
  if (execution?.executionArn) {
    const steps = await firstAndLatestStep(deps, execution.executionArn);
    latest = parseStepOutput(execution.output) ?? steps.latest;
    if (steps.first && latest) {
      const endMs = execution.stopDate ? execution.stopDate.getTime() : deps.now();
      const insertedBefore = steps.first.output.totals.inserted - steps.first.output.page.inserted;
      const seconds = (endMs - (execution.startDate?.getTime() ?? steps.first.atMs)) / 1000;
      if (seconds > 0) eventsPerSecond = (latest.totals.inserted - insertedBefore) / seconds;
    }
  }
  const inserted = checkpoint?.eventsInserted ?? latest?.totals.inserted ?? null;
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
  } else if (report.latest) {
    lines.push(
      `events:     ${count(report.latest.totals.inserted)}`,
      `pages:      ${count(report.latest.totals.pages)}`,
    );
  }
  if (report.eventsPerSecond !== null)
    lines.push(`rate:       ${count(Math.round(report.eventsPerSecond))} events/s`);
  if (report.etaSeconds !== null) lines.push(`eta:        ${duration(report.etaSeconds)}`);
  return lines;
}

import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createHandler } from '#functions/fetch-page/handler.ts';
import { synthesizeDefinition } from '#infra/definition.ts';
import { configDefaults } from '#shared/config.ts';
import { listChains } from '#shared/db/chains.ts';
import { type Checkpoint, releaseLease, resetSource } from '#shared/db/checkpoints.ts';
import type { Db } from '#shared/db/client.ts';
import { LeaseHeldError } from '#shared/errors.ts';
import { sourceHeader, sourceTotals } from '#shared/step/totals.ts';
import type { SimulatorOptionsInput } from '../simulator/index.ts';
import { checkSourceUpstream, forgetUpstream, upstreamOf } from './datasets.ts';
import { type LocalEnvironment, openEnvironment, processAlive } from './environment.ts';
import { runExecutions } from './executor.ts';
import { InterruptedError } from './interrupted.ts';
import { type LocalRunOptions, variantSourceId } from './options.ts';
import { createProgressReporter, progressFromRows } from './progress.ts';
import { plannedEventsPerSecond, stepConfig } from './scaling.ts';
import { expectedOf, follow, type TopUpSummary, topUpLine, topUpOf } from './topup.ts';
import {
  conflictsOf,
  countStored,
  type StoredCounts,
  storedRowsProblem,
  verificationProblem,
} from './verification.ts';

export interface LocalRunSummary {
  status: 'complete' | 'failed' | 'interrupted';
  sourceId: string;
  /** Rows stored for the source. */
  events: number;
  distinctIds: number;
  duplicatesSkipped: number;
  rejected: number;
  /** Conflicting duplicates: ids sent again with other content (event_conflicts); any fails verification. */
  conflicts: number;
  pages: number;
  requests: number;
  rateLimited: number;
  executions: number;
  /** Invocations of the function this run (Plan tasks and FetchPage steps, waits for a slot included). */
  invocations: number;
  /** Cursor chains the source was read with, and how it was planned (null: not planned yet). */
  chains: number;
  chainMode: 'single' | 'chains' | 'fallback' | null;
  /** Why one chain, or why the source fell back to one. */
  chainNote: string | null;
  seconds: number;
  /** What the upstream says it holds (simulator: its valid-event count; real API: meta.total). */
  expectedEvents: number | null;
  verified: boolean;
  alreadyComplete: boolean;
  /** Why a complete run did not verify, in words (null when it verified or did not complete). */
  problem: string | null;
  /** The run's log (the function's lines and any failure); null when the run failed before it had one. */
  logFile: string | null;
  error?: { name: string; message: string };
  /** When this run topped up a complete source: what it added (null: a backfill or its resumption). */
  topUp?: TopUpSummary | null;
}

export interface LocalRunIo {
  /** Human-readable lines (stdout). */
  out: (text: string) => void;
  /** Warnings and errors (stderr). */
  err: (text: string) => void;
  progressMode: 'tty' | 'lines' | 'none';
  /**
   * Aborts the run (Ctrl-C): before the executions, at once (InterruptedError); during them, the
   * current execution stops after its in-flight step.
   */
  signal?: AbortSignal;
  /** Called once the source has a checkpoint to resume from (a resume hint means something from then on). */
  onResumable?: () => void;
  /**
   * Events per request (the handler's PAGE_SIZE). Only benchmarks change it, to keep the page
   * count while making pages cheaper (bench/floor.ts). @default 5000
   */
  pageSize?: number;
  /** The fetch-page function's timeout; only tests shorten it. @default FUNCTION_TIMEOUT_MS */
  functionTimeoutMs?: number;
  /** Tests only: more options for the bundled simulator (built cursors, skewed timestamps...). */
  simulator?: Partial<SimulatorOptionsInput>;
}

const LOCAL_OWNER = /^local:([^:]+):(\d+):/;

/**
 * Runs the pipeline on this machine: the state machine synthesized from the CDK code,
 * executed by aws-local-stepfunctions with the real fetch-page handler in-process, against
 * PostgreSQL and the DataSync API (or the bundled simulator).
 */
export async function runLocal(options: LocalRunOptions, io: LocalRunIo): Promise<LocalRunSummary> {
  const started = Date.now();
  const dataDir = resolve(options.dataDir);
  const log = openLog(dataDir, options.sourceId);
  let env: LocalEnvironment | null = null;
  try {
    env = await openEnvironment(options, dataDir, io.out, io.simulator, io.signal);
    const { db, simulator } = env;
    const expectedEvents = expectedOf(simulator, options);
    if (options.reset) {
      const gone = await resetSource(db, options.sourceId);
      await forgetUpstream(db, options.sourceId);
      io.out(
        `reset: source "${options.sourceId}" emptied (${gone.events.toLocaleString('en-US')} events and ${gone.rejected.toLocaleString('en-US')} rejected rows deleted)\n`,
      );
    }
    const beforeRows = await listChains(db, options.sourceId);
    const before = sourceHeader(beforeRows);
    // A run for another data set than the stored one is refused before anything is written:
    // starting a source over takes --reset.
    await checkSourceUpstream(
      db,
      options.sourceId,
      beforeRows,
      upstreamOf(options, env.simulator ? null : env.apiUrl),
      simulator?.dataset ?? null,
      otherSourceName(options),
    );
    const parentExecutionId = leaseHandover(before, options.sourceId, io);
    if (io.signal?.aborted) {
      throw new InterruptedError(
        `interrupted before the run started: nothing was written for source "${options.sourceId}"`,
      );
    }

    if (before?.status === 'complete') {
      const counts = await countStored(env.sql, options.sourceId);
      // "Complete" is the checkpoint's word; the rows are counted before a top-up builds on them.
      const problem = storedRowsProblem(counts, beforeRows);
      if (problem !== null) {
        io.out(
          `source "${options.sourceId}" was completed earlier, but its stored rows no longer match its checkpoint ` +
            `(${problem}): rows were deleted or changed outside the pipeline. Run again with --reset to ingest it anew.\n`,
        );
        return conclude('complete', options, counts, beforeRows, 0, 0, started, expectedEvents, true, log);
      }
      io.out(topUpLine(options, before, counts.events));
    } else if (before) {
      const t = sourceTotals(beforeRows);
      const chains = beforeRows.length > 1 ? ` over ${beforeRows.length} chains` : '';
      io.out(
        `resuming source "${options.sourceId}" from its checkpoint: ${t.inserted.toLocaleString('en-US')} events, ${t.pages} page${t.pages === 1 ? '' : 's'}${chains}\n`,
      );
    }
    io.out(`logs: ${log.file}\n`);
    io.onResumable?.();

    const result = await execute(
      options,
      io,
      env,
      log,
      beforeRows,
      parentExecutionId,
      expectedEvents,
      started,
    );

    let afterRows = await listChains(db, options.sourceId);
    // An aborted or failed execution may not reach the step that hands every lease back (a chain
    // that failed frees its own rows; the others keep theirs); without this, a deployed run (or
    // one on another host) would be refused until the TTL runs out.
    const ours = `local:${hostname()}:${process.pid}:`;
    if (result.interrupted || result.failure) {
      for (const row of afterRows) {
        if (row.leaseOwner?.startsWith(ours))
          await releaseLease(db, { sourceId: row.sourceId, owner: row.leaseOwner });
      }
      afterRows = await listChains(db, options.sourceId);
    }
    const after = sourceHeader(afterRows);
    if (!result.interrupted && !result.failure) {
      io.out(`verifying: counting the rows stored for "${options.sourceId}" against the checkpoint\n`);
    }
    const counts = await countStored(env.sql, options.sourceId);
    const status = result.interrupted
      ? 'interrupted'
      : result.failure || after?.status !== 'complete'
        ? 'failed'
        : 'complete';
    const summary = conclude(
      status,
      options,
      counts,
      afterRows,
      result.executions,
      result.invocations,
      started,
      expectedEvents,
      false,
      log,
    );
    // The preflight probe's requests (a real API only) are requests sent too; they are not on a row.
    summary.requests += env.probeRequests;
    if (result.failure) {
      summary.error = result.failure;
      log.write('ERROR', 'the run failed', { error: result.failure.name, reason: result.failure.message });
    }
    if (after?.chainMode === 'fallback') {
      io.err(`fell back to one cursor chain: ${after.chainNote ?? 'no reason recorded'}\n`);
    }
    if (result.failure) {
      // already logged above
    } else if (status === 'failed') {
      log.write('ERROR', 'the last execution ended and the checkpoint is not complete', {
        checkpointStatus: after?.status ?? null,
        lastError: after?.lastError ?? null,
      });
    }
    summary.topUp = topUpOf(beforeRows, afterRows);
    if (options.follow && status === 'complete' && summary.verified) {
      return await follow(options, io, summary, async () => {
        const rowsBefore = await listChains(db, options.sourceId);
        const r = await execute(
          options,
          { ...io, progressMode: 'none' },
          env!,
          log,
          rowsBefore,
          null,
          expectedOf(simulator, options),
          Date.now(),
        );
        const rowsAfter = await listChains(db, options.sourceId);
        const c = await countStored(env!.sql, options.sourceId);
        const ok = !r.failure && !r.interrupted && sourceHeader(rowsAfter)?.status === 'complete';
        const s = conclude(
          r.interrupted ? 'interrupted' : ok ? 'complete' : 'failed',
          options,
          c,
          rowsAfter,
          r.executions,
          r.invocations,
          started,
          expectedOf(simulator, options),
          false,
          log,
        );
        if (r.failure) s.error = r.failure;
        s.topUp = topUpOf(rowsBefore, rowsAfter);
        return s;
      });
    }
    return summary;
  } catch (error) {
    log.write('ERROR', 'the run stopped', { error: (error as Error).name, reason: (error as Error).message });
    throw error;
  } finally {
    await env?.close();
  }
}

/** The executions, with the progress display fed by each step. */
async function execute(
  options: LocalRunOptions,
  io: LocalRunIo,
  env: LocalEnvironment,
  log: RunLog,
  beforeRows: Checkpoint[],
  parentExecutionId: string | null,
  expectedEvents: number | null,
  started: number,
) {
  const pageSize = io.pageSize ?? configDefaults.pageSize;
  const handler = createHandler({
    config: stepConfig(options, {
      apiUrl: env.apiUrl,
      apiKey: env.apiKey,
      databaseUrl: env.databaseUrl,
      pageSize,
    }),
    logger: {
      info: (m, f) => log.write('INFO', m, f),
      warn: (m, f) => log.write('WARN', m, f),
      error: (m, f) => log.write('ERROR', m, f),
    },
    metrics: { add: () => {}, flush: () => {} },
  });

  const progress = createProgressReporter({ mode: io.progressMode, write: io.out });
  const before = sourceHeader(beforeRows);
  const total = before?.totalReported ?? expectedEvents;
  const startStored = sourceTotals(beforeRows).inserted;
  const plannedRate = plannedEventsPerSecond(options, pageSize);
  // The chains' rows, read on the ticker: every chain's counters, whichever step ran last.
  let rows = beforeRows;
  let invocations = 0;
  // The first time this run is seen to have stored a page: the measured rate counts from there.
  let firstPage: { at: number; stored: number } | null = null;
  const snapshot = () => {
    const p = progressFromRows(rows);
    const now = Date.now();
    if (firstPage === null && p.stored > startStored) firstPage = { at: now, stored: p.stored };
    return {
      ...p,
      total: total ?? null,
      elapsedMs: now - started,
      storedThisRun: p.stored - startStored,
      plannedRate,
      sinceFirstPage: firstPage ? { ms: now - firstPage.at, stored: p.stored - firstPage.stored } : null,
    };
  };
  const refresh = poller(env.db, options.sourceId, (r) => {
    rows = r;
  });
  const tick = () => {
    void refresh().then(() => progress.update(snapshot()));
  };
  const ticker = setInterval(tick, io.progressMode === 'tty' ? 500 : 1000);
  try {
    const result = await runExecutions({
      // The iteration budget reaches the in-process function through its config (stepConfig).
      definition: synthesizeDefinition(),
      handler,
      input: { sourceId: options.sourceId, ...(parentExecutionId ? { parentExecutionId } : {}) },
      timeScale: options.timeScale,
      ...(io.functionTimeoutMs ? { functionTimeoutMs: io.functionTimeoutMs } : {}),
      // Lambda discards a timed-out sandbox: its connection goes with it, and the next invocation
      // starts cold. close() does that here; the handler builds anew on its next call.
      sandbox: { reset: () => handler.close() },
      ...(io.signal ? { signal: io.signal } : {}),
      onStep: () => {
        invocations++;
      },
      onPlan: () => {
        invocations++;
      },
    });
    return { ...result, invocations };
  } finally {
    clearInterval(ticker);
    await refresh();
    progress.done(snapshot());
    await handler.close();
  }
}

/** Reads the source's rows; a read still in flight is joined, not doubled, and a failed read keeps the last rows. */
function poller(db: Db, sourceId: string, set: (rows: Checkpoint[]) => void): () => Promise<void> {
  let inFlight: Promise<void> | null = null;
  return () => {
    inFlight ??= listChains(db, sourceId)
      .then(set, () => undefined)
      .finally(() => {
        inFlight = null;
      });
    return inFlight;
  };
}

/**
 * The lease a killed local run left behind (its process is gone) is handed over at once, expired
 * or not: the takeover is the same either way, and saying so does not depend on how long the
 * restart took. A lease another live run holds refuses this one before anything is written.
 */
function leaseHandover(before: Checkpoint | null, sourceId: string, io: LocalRunIo): string | null {
  const holder = before?.leaseOwner ?? null;
  if (!holder) return null;
  const m = LOCAL_OWNER.exec(holder);
  if (m && m[1] === hostname() && !processAlive(Number(m[2]))) {
    io.out(`resuming: the previous local run (pid ${m[2]}) is gone; taking over its lease\n`);
    return holder;
  }
  if ((before?.leaseExpiresAtMs ?? 0) <= Date.now()) return null;
  const until = new Date(before?.leaseExpiresAtMs ?? 0).toISOString();
  throw new LeaseHeldError(
    `Source "${sourceId}" is being ingested by another run (${holder}, lease until ${until}). ` +
      'Wait for it to finish or stop it, then run this command again; use --source to ingest another source meanwhile.',
  );
}

/** A name for a second source beside `options.sourceId`: the variant's own name, else `<source>-2`. */
function otherSourceName(options: LocalRunOptions): string {
  const variant = options.apiUrl ? options.sourceId : variantSourceId(options);
  return variant !== options.sourceId ? variant : `${options.sourceId.slice(0, 62)}-2`;
}

interface RunLog {
  file: string;
  write(level: string, message: string, fields?: Record<string, unknown>): void;
}

/** `<data-dir>/logs/<source>.log`: one JSON line per entry, the function's and the runner's. */
function openLog(dataDir: string, sourceId: string): RunLog {
  const dir = join(dataDir, 'logs');
  try {
    makeDirs(dir);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new Error(
      `The data dir ${dataDir} is not writable (${e.code ?? e.message} creating ${dir}). ` +
        'Pass --data-dir with a folder this user can write, or fix its permissions.',
    );
  }
  const file = join(dir, `${sourceId}.log`);
  return {
    file,
    write: (level, message, fields) =>
      appendFileSync(
        file,
        `${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`,
      ),
  };
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdirSync never returns on a path where mkdir
 * answers ENOENT under an existing parent (under /proc, say), so a bad --data-dir hung the run.
 */
function makeDirs(dir: string): void {
  if (existsSync(dir)) return;
  const parent = dirname(dir);
  if (parent !== dir) makeDirs(parent);
  mkdirSync(dir);
}

function conclude(
  status: LocalRunSummary['status'],
  options: LocalRunOptions,
  counts: StoredCounts,
  rows: Checkpoint[],
  executions: number,
  invocationCount: number,
  started: number,
  expectedEvents: number | null,
  alreadyComplete: boolean,
  log: RunLog,
): LocalRunSummary {
  const problem = status === 'complete' ? verificationProblem(counts, rows, expectedEvents) : null;
  if (problem) log.write('ERROR', 'verification failed', { reason: problem });
  const totals = sourceTotals(rows);
  const head = sourceHeader(rows);
  return {
    status,
    sourceId: options.sourceId,
    events: counts.events,
    distinctIds: counts.distinctIds,
    duplicatesSkipped: totals.duplicates,
    rejected: counts.rejectedRows,
    conflicts: conflictsOf(rows),
    pages: totals.pages,
    requests: totals.requests,
    rateLimited: totals.rateLimited,
    executions,
    invocations: invocationCount,
    chains: Math.max(1, rows.length),
    chainMode: head?.chainMode ?? null,
    chainNote: head?.chainNote ?? null,
    seconds: Math.round((Date.now() - started) / 100) / 10,
    expectedEvents,
    verified: status === 'complete' && problem === null,
    alreadyComplete,
    problem,
    logFile: log.file,
  };
}

import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { ExecutionError, StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import type { Sql } from 'postgres';
import { createHandler } from '#functions/fetch-page/handler.ts';
import { synthesizeDefinition } from '#infra/definition.ts';
import { CONTINUE_AS_NEW_STATE, FETCH_PAGE_STATE, WAIT_STATE } from '#infra/state-machine.ts';
import { getCheckpoint, releaseLease, resetSource } from '#shared/db/checkpoints.ts';
import { createDb, createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { AuthError, LeaseHeldError } from '#shared/errors.ts';
import { DEFAULT_SAFETY_MARGIN_MS } from '#shared/pacing.ts';
import type { StepOutput } from '#shared/step.ts';
import { createDataSyncClient } from '#shared/upstream/client.ts';
import { startSimulator } from '../simulator/index.ts';
import type { LocalRunOptions } from './options.ts';
import { createProgressReporter } from './progress.ts';

// aws-local-stepfunctions 3 uses Promise.withResolvers (Node >= 22); Node 20 lacks it.
if (!('withResolvers' in Promise)) {
  Object.assign(Promise, {
    withResolvers<T>() {
      let resolve!: (v: T) => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

export interface LocalRunSummary {
  status: 'complete' | 'failed' | 'interrupted';
  sourceId: string;
  /** Rows stored for the source. */
  events: number;
  distinctIds: number;
  duplicatesSkipped: number;
  rejected: number;
  pages: number;
  requests: number;
  rateLimited: number;
  executions: number;
  seconds: number;
  /** What the upstream says it holds (simulator: its valid-event count; real API: meta.total). */
  expectedEvents: number | null;
  verified: boolean;
  alreadyComplete: boolean;
  error?: { name: string; message: string };
}

export interface LocalRunIo {
  /** Human-readable lines (stdout). */
  out: (text: string) => void;
  /** Warnings and errors (stderr). */
  err: (text: string) => void;
  progressMode: 'tty' | 'lines' | 'none';
  /** Aborts the run (Ctrl-C): the current execution stops after its in-flight step. */
  signal?: AbortSignal;
  /**
   * Events per request (the handler's PAGE_SIZE). Only benchmarks change it, to keep the page
   * count while making pages cheaper (bench/floor.ts). @default 5000
   */
  pageSize?: number;
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
  const cleanups: Array<() => Promise<void>> = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
  };

  try {
    // 1. PostgreSQL: the given URL, else the embedded server kept in .local/postgres.
    let databaseUrl = options.databaseUrl;
    if (!databaseUrl) {
      // Loaded only when no --database-url is given.
      const { startEmbeddedPostgres } = await import('../embedded-postgres.ts');
      const pg = await startEmbeddedPostgres({
        dataDir: join(dataDir, 'postgres'),
        log: (l) => io.out(`${l}\n`),
      });
      if (pg.started) cleanups.push(() => pg.stop());
      databaseUrl = await ensureDatabase(pg.url, 'datasync');
    }
    const sql = createSql(databaseUrl, { applicationName: 'datasync-local-runner' });
    cleanups.push(() => sql.end({ timeout: 5 }));
    await checkDatabase(sql, databaseUrl);
    await runMigrations(sql);
    const db = createDb(sql);

    // 2. Upstream: the given API, else the simulator in-process on a free port.
    let apiUrl = options.apiUrl;
    let apiKey = options.apiKey;
    let simulator: Awaited<ReturnType<typeof startSimulator>> | null = null;
    if (!apiUrl) {
      apiKey = 'local-dev-key';
      simulator = await startSimulator({
        port: 0,
        events: options.events,
        seed: options.seed,
        apiKey,
        windowSeconds: options.windowSeconds,
        rateLimit: options.rateLimit,
        windowMode: options.windowMode,
        timeScale: options.timeScale,
        latencyMs: options.latencyMs,
        chaos: options.chaos,
      });
      cleanups.push(() => simulator!.close());
      apiUrl = simulator.url;
      io.out(
        `simulator: ${options.events.toLocaleString('en-US')} events at ${apiUrl} (${describeLimit(options)})\n`,
      );
    }

    // A wrong key or an unreachable API must fail before anything is written for the source.
    if (!simulator) await preflightUpstream(apiUrl, apiKey ?? '');

    if (options.reset) {
      await resetSource(db, options.sourceId);
      io.out(`reset: source "${options.sourceId}" emptied\n`);
    }

    const expectedEvents = simulator ? simulator.dataset.expectedValidCount() : null;
    const before = await getCheckpoint(db, options.sourceId);
    if (before?.status === 'complete') {
      const v = await verify(sql, options.sourceId);
      io.out(
        `source "${options.sourceId}" is already complete (${v.events.toLocaleString('en-US')} events stored): nothing to do. ` +
          'Use --reset to ingest it again, or --source to ingest another.\n',
      );
      return summarise('complete', options, v, before, 0, started, expectedEvents, true);
    }

    // 3. A lease left by a local run that was killed (its process is gone) is handed over at once.
    let parentExecutionId: string | null = null;
    const holder = before?.leaseOwner ?? null;
    if (holder && (before?.leaseExpiresAtMs ?? 0) > Date.now()) {
      const m = LOCAL_OWNER.exec(holder);
      if (m && m[1] === hostname() && !processAlive(Number(m[2]))) {
        parentExecutionId = holder;
        io.out(`resuming: the previous local run (pid ${m[2]}) is gone; taking over its lease\n`);
      } else {
        // Refuse before starting an execution, so a second run writes nothing and says why in one line.
        const until = new Date(before?.leaseExpiresAtMs ?? 0).toISOString();
        throw new LeaseHeldError(
          `Source "${options.sourceId}" is being ingested by another run (${holder}, lease until ${until}). ` +
            'Wait for it to finish or stop it, then run this command again; use --source to ingest another source meanwhile.',
        );
      }
    }
    if (before && !options.reset) {
      io.out(
        `resuming source "${options.sourceId}" from its checkpoint: ${before.eventsInserted.toLocaleString('en-US')} events, ${before.pages} pages\n`,
      );
    }

    // 4. The one definition: synthesized from the CDK stack.
    const definition = synthesizeDefinition({ maxIterationsPerExecution: options.maxIterations });

    const logDir = join(dataDir, 'logs');
    mkdirSync(logDir, { recursive: true });
    const logFile = join(logDir, `${options.sourceId}.log`);
    io.out(`logs: ${logFile}\n`);
    const log = (level: string) => (message: string, fields?: Record<string, unknown>) =>
      appendFileSync(
        logFile,
        `${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`,
      );

    const handler = createHandler({
      env: {
        DATASYNC_API_URL: apiUrl,
        DATASYNC_API_KEY: apiKey ?? '',
        DATABASE_URL: databaseUrl,
        MIN_REQUEST_SPACING_MS: String(Math.ceil(options.minSpacingMs / options.timeScale)),
        // The simulator's windows shrink by timeScale: so must the margin added to its Reset,
        // or a scaled run pays 250 ms per window that a real run pays per 20-60 s.
        RATE_LIMIT_MARGIN_MS: String(
          Math.min(60_000, Math.ceil(DEFAULT_SAFETY_MARGIN_MS / options.timeScale)),
        ),
        // The simulator's cursors live 116 s / timeScale: an unscaled 15 s margin would refresh
        // every cursor of a scaled run, a path a real run takes only after a long pause.
        // (Clamped like the variables' own bounds: a slowed-down run, time-scale < 1, stays valid.)
        CURSOR_REFRESH_MARGIN_MS: String(Math.min(110_000, Math.ceil(15_000 / options.timeScale))),
        PAGE_SIZE: String(io.pageSize ?? 5000),
        RETRY_BUDGET_MS: String(Math.ceil(20_000 / Math.max(1, Math.min(options.timeScale, 20)))),
        LEASE_TTL_MS: String(Math.max(10_000, Math.ceil(180_000 / options.timeScale))),
      },
      logger: { info: log('INFO'), warn: log('WARN'), error: log('ERROR') },
      metrics: { add: () => {}, flush: () => {} },
    });
    cleanups.push(() => handler.close());

    const progress = createProgressReporter({ mode: io.progressMode, write: io.out });
    const total = before?.totalReported ?? expectedEvents;
    const startStored = before?.eventsInserted ?? 0;
    let last: StepOutput | null = null;
    let rateLimitedThisRun = 0;
    let lastWaitSeconds = 0;
    const tick = () =>
      progress.update({
        stored: last?.totals.inserted ?? startStored,
        total: total ?? null,
        pages: last?.totals.pages ?? before?.pages ?? 0,
        rejected: last?.totals.rejected ?? before?.rejected ?? 0,
        rateLimited: (before?.rateLimited ?? 0) + rateLimitedThisRun,
        elapsedMs: Date.now() - started,
        storedThisRun: (last?.totals.inserted ?? startStored) - startStored,
      });
    const ticker = setInterval(tick, io.progressMode === 'tty' ? 500 : 1000);
    cleanups.push(async () => clearInterval(ticker));

    // 5. Executions: the first one, then one per continue-as-new.
    let input: Record<string, unknown> = { sourceId: options.sourceId };
    if (parentExecutionId) input.parentExecutionId = parentExecutionId;
    let executions = 0;
    let failure: { name: string; message: string } | null = null;
    let interrupted = false;
    const stateMachineArn = `arn:aws:states:local:000000000000:stateMachine:datasync-ingest`;

    while (input) {
      executions++;
      const executionId = `local:${hostname()}:${process.pid}:${randomUUID()}`;
      let child: Record<string, unknown> | null = null;
      const sm = new StateMachine(definition as unknown as StateMachineDefinition, {
        validationOptions: { checkArn: false },
      });
      const waitOverrides: Record<string, number> = {};
      if (options.timeScale !== 1) {
        // Waits are real seconds by default; time-scaled runs shorten them by the same factor
        // the simulator uses, reading the step's own waitSeconds at the moment the Wait starts.
        Object.defineProperty(waitOverrides, WAIT_STATE, {
          enumerable: true,
          get: () => Math.ceil((lastWaitSeconds * 1000) / options.timeScale),
        });
      }
      let inFlight: Promise<unknown> = Promise.resolve();
      const execution = sm.run(input as never, {
        context: {
          Execution: {
            Id: executionId,
            Name: executionId.split(':').pop(),
            Input: input as never,
            StartTime: new Date().toISOString(),
          },
          StateMachine: { Id: stateMachineArn, Name: 'datasync-ingest' },
        },
        overrides: {
          taskResourceLocalHandlers: {
            [FETCH_PAGE_STATE]: async (payload) => {
              const p = handler(payload);
              inFlight = p.catch(() => undefined);
              const out = await p;
              last = out;
              lastWaitSeconds = out.waitSeconds;
              if (out.skipped === 'rate-limited') rateLimitedThisRun++;
              return out as never;
            },
            [CONTINUE_AS_NEW_STATE]: async (payload) => {
              const p = payload as { Input?: unknown; StateMachineArn?: string };
              const childInput = typeof p.Input === 'string' ? JSON.parse(p.Input) : p.Input;
              child = childInput as Record<string, unknown>;
              return {
                ExecutionArn: `${stateMachineArn}:child-${executions + 1}`,
                StartDate: new Date().toISOString(),
              } as never;
            },
          },
          waitTimeOverrides: waitOverrides,
          ...(options.timeScale !== 1
            ? { retryIntervalOverrides: { [FETCH_PAGE_STATE]: Math.ceil(2000 / options.timeScale) } }
            : {}),
        },
      });
      const onAbort = () => execution.abort();
      io.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        await execution.result;
      } catch (error) {
        if (io.signal?.aborted) {
          interrupted = true;
        } else {
          failure = describeExecutionError(error);
        }
      } finally {
        io.signal?.removeEventListener('abort', onAbort);
        await inFlight;
      }
      if (failure || interrupted) break;
      input = child as unknown as Record<string, unknown>;
    }
    tick();
    progress.done();

    let after = await getCheckpoint(db, options.sourceId);
    // An aborted execution never reaches the step that hands the lease back; without this, a
    // deployed run (or one on another host) would be refused until the TTL runs out.
    const ours = `local:${hostname()}:${process.pid}:`;
    if (interrupted && after?.leaseOwner?.startsWith(ours)) {
      await releaseLease(db, { sourceId: options.sourceId, owner: after.leaseOwner });
      after = await getCheckpoint(db, options.sourceId);
    }
    const v = await verify(sql, options.sourceId);
    const status = interrupted
      ? 'interrupted'
      : failure
        ? 'failed'
        : after?.status === 'complete'
          ? 'complete'
          : 'failed';
    const summary = summarise(status, options, v, after, executions, started, expectedEvents, false);
    if (failure) summary.error = failure;
    return summary;
  } finally {
    await cleanup();
  }
}

async function verify(sql: Sql, sourceId: string) {
  const [row] = await sql<{ events: number; distinctIds: number }[]>`
    select count(*)::int as "events", count(distinct id)::int as "distinctIds" from events where source_id = ${sourceId}`;
  const [rej] = await sql<{ rejected: number }[]>`
    select count(*)::int as "rejected" from rejected_events where source_id = ${sourceId}`;
  return { events: row?.events ?? 0, distinctIds: row?.distinctIds ?? 0, rejectedRows: rej?.rejected ?? 0 };
}

function summarise(
  status: LocalRunSummary['status'],
  options: LocalRunOptions,
  v: { events: number; distinctIds: number; rejectedRows: number },
  cp: Awaited<ReturnType<typeof getCheckpoint>>,
  executions: number,
  started: number,
  expectedEvents: number | null,
  alreadyComplete: boolean,
): LocalRunSummary {
  const verified =
    status === 'complete' &&
    v.events === v.distinctIds &&
    v.rejectedRows === (cp?.rejected ?? 0) &&
    v.events === (cp?.eventsInserted ?? -1) &&
    (expectedEvents === null || v.events === expectedEvents);
  return {
    status,
    sourceId: options.sourceId,
    events: v.events,
    distinctIds: v.distinctIds,
    duplicatesSkipped: cp?.duplicatesSkipped ?? 0,
    rejected: v.rejectedRows,
    pages: cp?.pages ?? 0,
    requests: cp?.requests ?? 0,
    rateLimited: cp?.rateLimited ?? 0,
    executions,
    seconds: Math.round((Date.now() - started) / 100) / 10,
    expectedEvents,
    verified,
    alreadyComplete,
  };
}

function describeExecutionError(error: unknown): { name: string; message: string } {
  // ExecutionError wraps the state machine's failure; the Fail state keeps the task's error and cause.
  if (error instanceof ExecutionError) {
    const cause = (error as { cause?: unknown }).cause as { name?: string; message?: string } | undefined;
    const text = error.message;
    const m = /Execution has failed with the following error: (.*)/s.exec(text);
    return { name: cause?.name ?? 'ExecutionFailed', message: cause?.message ?? m?.[1] ?? text };
  }
  return error instanceof Error
    ? { name: error.name, message: error.message }
    : { name: 'Error', message: String(error) };
}

function describeLimit(o: LocalRunOptions): string {
  if (o.rateLimit === 0) return 'no rate limit';
  const scale = o.timeScale !== 1 ? `, time-scale ${o.timeScale}` : '';
  return `${o.rateLimit} requests per ${o.windowSeconds} s ${o.windowMode}${scale}${o.chaos ? ', chaos' : ''}`;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One small request (limit=1) before the first execution. Only a wrong key or an API that cannot
 * be reached at all stops the run here; a 429 or a passing 5xx is left to the workflow's retries.
 */
async function preflightUpstream(apiUrl: string, apiKey: string): Promise<void> {
  const client = createDataSyncClient({ baseUrl: apiUrl, apiKey, timeoutMs: 15_000 });
  let lastError: unknown = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await client.fetchEvents({ limit: 1 });
      return;
    } catch (error) {
      if (error instanceof AuthError) {
        throw new AuthError(
          `The DataSync API at ${apiUrl} refused the API key (HTTP ${error.status}). Check --api-key / DATASYNC_API_KEY.`,
          error.status,
        );
      }
      if ((error as Error).name !== 'UpstreamUnavailableError') return;
      lastError = error;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  const reason = (lastError as Error).message.split(';')[0];
  throw new Error(
    `Cannot reach the DataSync API at ${apiUrl} (${reason}). Check --api-url / DATASYNC_API_URL and the network, ` +
      'or leave both unset to use the bundled simulator.',
  );
}

async function checkDatabase(sql: Sql, url: string): Promise<void> {
  try {
    await sql`select 1`;
  } catch (error) {
    const u = safeUrl(url);
    throw new Error(
      `Cannot connect to PostgreSQL at ${u?.host ?? url}: ${(error as Error).message}. ` +
        'Check --database-url / DATABASE_URL and that the server is running, or leave both unset to use the embedded PostgreSQL.',
    );
  }
}

/** The embedded server's `postgres` database holds the catalog; the data goes to a database of its own. */
async function ensureDatabase(adminUrl: string, name: string): Promise<string> {
  const admin = createSql(adminUrl, { applicationName: 'datasync-local-runner' });
  try {
    const rows = await admin`select 1 from pg_database where datname = ${name}`;
    if (rows.length === 0) await admin.unsafe(`create database ${name}`).catch(() => undefined);
  } finally {
    await admin.end({ timeout: 5 });
  }
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

function safeUrl(url: string): URL | null {
  try {
    return new URL(url);
  } catch {
    return null;
  }
}

import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Sql } from 'postgres';
import { createDb, createSql, type Db } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { describeProbeFailure, probePostgres } from '#shared/db/probe.ts';
import { AuthError } from '#shared/errors.ts';
import { createDataSyncClient } from '#shared/upstream/client.ts';
import { type RunningSimulator, type SimulatorOptionsInput, startSimulator } from '../simulator/index.ts';
import { growthFile, growthLog } from './growth-log.ts';
import { InterruptedError } from './interrupted.ts';
import type { LocalRunOptions } from './options.ts';
import { maskCredentials } from './resume.ts';

/** What a local run works against: a migrated database and an upstream (the simulator unless --api-url). */
export interface LocalEnvironment {
  databaseUrl: string;
  sql: Sql;
  db: Db;
  apiUrl: string;
  apiKey: string;
  /** null with --api-url: the real API is not ours to describe. */
  simulator: RunningSimulator | null;
  /** Requests the preflight probe sent to a real API (0 with the simulator, which needs none). */
  probeRequests: number;
  /** Stops what this environment started, in reverse order. Never throws. */
  close(): Promise<void>;
}

type Cleanup = () => Promise<void>;

/** From the TCP connect to the server's first ReadyForQuery (postgres.js's connect_timeout). */
export const CONNECT_TIMEOUT_SECONDS = 10;

/**
 * PostgreSQL (the given URL, else the embedded server kept in `<data-dir>/postgres`) and the
 * upstream (the given API after a preflight, else the simulator in-process on a free port).
 */
export async function openEnvironment(
  options: LocalRunOptions,
  dataDir: string,
  out: (text: string) => void,
  simulatorOverrides: Partial<SimulatorOptionsInput> = {},
  signal?: AbortSignal,
): Promise<LocalEnvironment> {
  const cleanups: Cleanup[] = [];
  // Ctrl-C while connecting stops at once: nothing of this run is written yet.
  const step = <T>(what: string, p: Promise<T>) => abortable(p, signal, what);
  const close = async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
    cleanups.length = 0;
  };
  try {
    let databaseUrl = options.databaseUrl;
    if (!databaseUrl) {
      const server = await openEmbeddedServer(dataDir, out);
      cleanups.push(server.release);
      databaseUrl = await step('starting the embedded PostgreSQL', ensureDatabase(server.url, 'datasync'));
    }
    const sql = createSql(databaseUrl, {
      applicationName: 'datasync-local-runner',
      connectTimeoutSeconds: CONNECT_TIMEOUT_SECONDS,
    });
    cleanups.push(() => sql.end({ timeout: signal?.aborted ? 0 : 5 }));
    const where = describeUrl(databaseUrl);
    await step(`connecting to PostgreSQL at ${where}`, checkDatabase(sql, databaseUrl));
    await step(`migrating the database at ${where}`, runMigrations(sql));

    let simulator: RunningSimulator | null = null;
    let probeRequests = 0;
    let apiUrl = options.apiUrl;
    let apiKey = options.apiKey ?? '';
    if (!apiUrl) {
      apiKey = 'local-dev-key';
      const sim = await startSimulator(
        {
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
          growRate: options.growRate,
          growLateShare: options.growLateShare,
          // Tests only: how the simulator reads built cursors, skewed timestamps and the like.
          ...simulatorOverrides,
        },
        growthLog(growthFile(dataDir, options)),
      );
      simulator = sim;
      cleanups.push(() => sim.close());
      apiUrl = sim.url;
      const grown = sim.dataset.grown > 0 ? ` (+${sim.dataset.grown.toLocaleString('en-US')} grown)` : '';
      out(
        `simulator: ${options.events.toLocaleString('en-US')} events${grown} at ${apiUrl} (${describeLimit(options)})\n`,
      );
    } else {
      // A wrong key or an unreachable API must fail before anything is written for the source
      // (bad-input.test.ts holds that nothing is stored): what the probe's request buys.
      probeRequests = await step(
        `checking the DataSync API at ${maskCredentials(apiUrl)}`,
        preflightUpstream(apiUrl, apiKey),
      );
    }
    return { databaseUrl, sql, db: createDb(sql), apiUrl, apiKey, simulator, probeRequests, close };
  } catch (error) {
    await close();
    throw error;
  }
}

export interface EmbeddedServer {
  url: string;
  /** Leaves the server; the last process using it stops it. */
  release: Cleanup;
}

/**
 * The embedded PostgreSQL of a data dir, shared by every local process that uses it (runs,
 * `npm run local:db`). Each registers its pid under `<data-dir>/postgres-users`; the last to leave
 * stops the server. A server left by a process killed with SIGKILL has no live user left, so the
 * next process adopts it and stops it when done, as it would stop its own.
 */
export async function openEmbeddedServer(
  dataDir: string,
  out: (text: string) => void,
): Promise<EmbeddedServer> {
  // Loaded only when no --database-url is given.
  const { startEmbeddedPostgres } = await import('../embedded-postgres.ts');
  const users = join(dataDir, 'postgres-users');
  const others = liveUsers(users);
  const pg = await startEmbeddedPostgres({ dataDir: join(dataDir, 'postgres'), log: (l) => out(`${l}\n`) });
  if (!pg.started && others.length === 0) {
    out('the embedded PostgreSQL was left running by a process that is gone: this one stops it when done\n');
  }
  mkdirSync(users, { recursive: true });
  const mine = join(users, String(process.pid));
  writeFileSync(mine, '');
  return {
    url: pg.url,
    release: async () => {
      rmSync(mine, { force: true });
      if (liveUsers(users).length === 0) await pg.stop();
    },
  };
}

/** Pids registered under `dir` whose process still runs (files of dead ones are removed). */
function liveUsers(dir: string): number[] {
  if (!existsSync(dir)) return [];
  const alive: number[] = [];
  for (const name of readdirSync(dir)) {
    const pid = Number(name);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) alive.push(pid);
    else if (pid !== process.pid) rmSync(join(dir, name), { force: true });
  }
  return alive;
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function describeLimit(o: LocalRunOptions): string {
  if (o.rateLimit === 0) return 'no rate limit';
  const scale = o.timeScale !== 1 ? `, time-scale ${o.timeScale}` : '';
  return `${o.rateLimit} requests per ${o.windowSeconds} s ${o.windowMode}${scale}${o.chaos ? ', chaos' : ''}`;
}

/**
 * One small request (limit=1) before the first execution. Only a wrong key or an API that cannot
 * be reached at all stops the run here; a 429 or a passing 5xx is left to the workflow's retries.
 * Returns the requests it sent: the run's summary counts them.
 */
async function preflightUpstream(apiUrl: string, apiKey: string): Promise<number> {
  const client = createDataSyncClient({ baseUrl: apiUrl, apiKey, timeoutMs: 15_000 });
  let lastError: unknown = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await client.fetchEvents({ limit: 1 });
      return attempt + 1;
    } catch (error) {
      if (error instanceof AuthError) {
        throw new AuthError(
          `The DataSync API at ${maskCredentials(apiUrl)} refused the API key (HTTP ${error.status}). Check --api-key / DATASYNC_API_KEY.`,
          error.status,
        );
      }
      if ((error as Error).name !== 'UpstreamUnavailableError') return attempt + 1;
      lastError = error;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  const reason = (lastError as Error).message.split(';')[0];
  throw new Error(
    `Cannot reach the DataSync API at ${maskCredentials(apiUrl)} (${reason}). Check --api-url / DATASYNC_API_URL and the network, ` +
      'or leave both unset to use the bundled simulator.',
  );
}

async function checkDatabase(sql: Sql, url: string): Promise<void> {
  const where = describeUrl(url);
  const u = safeUrl(url);
  const host = u ? (u.hostname || 'localhost').replace(/^\[(.*)\]$/, '$1') : null;
  // A multi-host URL or a Unix socket (?host=/path) is left to the driver.
  if (u && host && !u.searchParams.get('host') && !url.includes(',')) {
    const failure = await probePostgres(host, Number(u.port || 5432), CONNECT_TIMEOUT_SECONDS * 1000);
    if (failure) {
      throw new Error(
        `Cannot connect to PostgreSQL at ${where}: ${describeProbeFailure(failure)}. ${CONNECT_FIX}`,
      );
    }
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    // postgres.js retries a connection the server closes during authentication without end: bound it.
    await Promise.race([
      sql`select 1`,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(Object.assign(new Error('startup timed out'), { code: 'CONNECT_TIMEOUT' })),
          (CONNECT_TIMEOUT_SECONDS + 5) * 1000,
        );
      }),
    ]);
  } catch (error) {
    throw new Error(connectFailure(error, where));
  } finally {
    clearTimeout(timer);
  }
}

const CONNECT_FIX =
  'Check --database-url / DATABASE_URL (host and port of a PostgreSQL server) and that the server is running, ' +
  'or leave both unset to use the embedded PostgreSQL.';

/**
 * Why a connection failed, in words: a port that accepts TCP but does not answer as PostgreSQL
 * (a silent port, an HTTP server, a firewall that swallows packets) used to hang the run.
 */
export function connectFailure(error: unknown, where: string): string {
  const code = (error as { code?: unknown }).code;
  const message = (error as Error).message ?? String(error);
  const fix = CONNECT_FIX;
  if (code === 'CONNECT_TIMEOUT') {
    return (
      `Cannot connect to PostgreSQL at ${where}: no PostgreSQL answer within ${CONNECT_TIMEOUT_SECONDS} s ` +
      '(expected the server to accept the connection and answer its startup message; the port may be filtered, or ' +
      `something other than PostgreSQL listens there). ${fix}`
    );
  }
  if (code === 'CONNECTION_CLOSED' || code === 'CONNECTION_ENDED' || code === 'CONNECTION_DESTROYED') {
    return (
      `Cannot connect to PostgreSQL at ${where}: the server closed the connection during the startup handshake ` +
      `(${code}): something other than PostgreSQL listens on that port. ${fix}`
    );
  }
  return `Cannot connect to PostgreSQL at ${where}: ${message}. ${fix}`;
}

/** host:port of a URL, never its password. */
function describeUrl(url: string): string {
  const u = safeUrl(url);
  return u ? `${u.hostname || 'localhost'}:${u.port || '5432'}` : '<the database URL>';
}

/** Rejects with InterruptedError when the signal fires first; the step goes on in the background, unheeded. */
async function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return p;
  const interrupted = () =>
    new InterruptedError(
      `interrupted while ${what}: nothing was written by this run, so there is nothing to resume`,
    );
  if (signal.aborted) throw interrupted();
  let onAbort: () => void = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(interrupted());
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([p, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
    p.catch(() => undefined);
  }
}

/** The embedded server's `postgres` database holds the catalog; the data goes to a database of its own. */
export async function ensureDatabase(adminUrl: string, name: string): Promise<string> {
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

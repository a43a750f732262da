import { execFileSync } from 'node:child_process';
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

describe('postgres.js nextWrite guard (scripts/patch-postgres.mjs)', () => {
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
      await admin`select pg_terminate_backend(${pid})`;
      const outcome = await tx.then(
        () => 'committed',
        (error: { code?: string }) => error.code ?? String(error),
      );
      await new Promise((r) => setTimeout(r, 100));
      expect(outcome).toMatch(/CONNECTION_CLOSED|CONNECTION_ENDED|57P01/);
      expect(uncaught).toEqual([]);
      // The client reconnects for the next query.
      const [again] = await sql<{ one: number }[]>`select 1 as one`;
      expect(again?.one).toBe(1);
    } finally {
      process.off('uncaughtException', onUncaught);
      await sql.end({ timeout: 5 });
    }
  });
});

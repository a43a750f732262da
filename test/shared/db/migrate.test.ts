import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSql } from '#shared/db/client.ts';
import { DEFAULT_MIGRATIONS_FOLDER, runMigrations } from '#shared/db/migrate.ts';
import { ConfigError } from '#shared/errors.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

let testDb: TestDatabase;
const clients: Sql[] = [];

beforeAll(async () => {
  testDb = await createTestDatabase('dsi_migrate');
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.end({ timeout: 5 })));
  await testDb.drop();
});

function client(): Sql {
  const c = createSql(testDb.url);
  clients.push(c);
  return c;
}

describe('runMigrations', () => {
  it('applies the schema exactly once when four runners start at the same time on a fresh database', async () => {
    const results = await Promise.all([client(), client(), client(), client()].map((c) => runMigrations(c)));
    const applied = results.map((r) => r.applied).sort();
    expect(applied).toEqual([0, 0, 0, 1]);

    const sql = client();
    const tables = await sql<{ name: string }[]>`
      select table_name as name from information_schema.tables where table_schema = 'public' order by 1`;
    expect(tables.map((t) => t.name)).toEqual(['checkpoints', 'events', 'rejected_events']);
    const [bookkeeping] = await sql<
      { n: number }[]
    >`select count(*)::int as n from drizzle.__drizzle_migrations`;
    expect(bookkeeping?.n).toBe(1);
  });

  it('is a no-op when run again', async () => {
    expect(await runMigrations(client())).toEqual({ applied: 0 });
  });

  it('creates the status check and the reject dedupe key', async () => {
    const sql = client();
    await expect(sql`insert into checkpoints (source_id, status) values ('bad', 'paused')`).rejects.toThrow(
      /checkpoints_status_check/,
    );
    const [idx] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_indexes where indexname = 'rejected_events_source_raw_hash_key'`;
    expect(idx?.n).toBe(1);
  });

  it('names the folder and the fix when the journal is missing', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'dsi-migrations-'));
    try {
      const error = await runMigrations(client(), { migrationsFolder: empty }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toContain(join(empty, 'meta', '_journal.json'));
      expect((error as Error).message).toContain('MIGRATIONS_DIR');
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });

  it('resolves the default folder to the committed drizzle/ migrations', () => {
    expect(DEFAULT_MIGRATIONS_FOLDER.endsWith('/drizzle')).toBe(true);
  });
});

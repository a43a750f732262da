import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
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

  it.each([
    ['not JSON', '{"entries": [', /not JSON/],
    [
      "not drizzle-kit's shape",
      '{"entries": [{"idx": 0, "when": "soon"}]}',
      /entries\[0\]\.when[\s\S]*entries\[0\]\.tag/,
    ],
  ])('names the journal, what is wrong and the fix when the journal is %s', async (_, text, detail) => {
    const folder = await mkdtemp(join(tmpdir(), 'dsi-migrations-'));
    try {
      await mkdir(join(folder, 'meta'));
      await writeFile(join(folder, 'meta', '_journal.json'), text);
      const error = await runMigrations(client(), { migrationsFolder: folder }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConfigError);
      const message = (error as Error).message;
      expect(message).toContain(join(folder, 'meta', '_journal.json'));
      expect(message).toMatch(detail);
      expect(message).toContain('npx drizzle-kit generate');
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('names the missing migration file and the fix', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'dsi-migrations-'));
    try {
      await mkdir(join(folder, 'meta'));
      await writeFile(
        join(folder, 'meta', '_journal.json'),
        JSON.stringify({ entries: [{ idx: 0, when: 1, tag: '0000_gone' }] }),
      );
      const error = await runMigrations(client(), { migrationsFolder: folder }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toContain(join(folder, '0000_gone.sql'));
      expect((error as Error).message).toContain('Restore the file from git');
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('resolves the default folder to the committed drizzle/ migrations', () => {
    expect(DEFAULT_MIGRATIONS_FOLDER.endsWith('/drizzle')).toBe(true);
  });
});

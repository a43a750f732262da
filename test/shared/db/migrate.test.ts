import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS_DIR } from '#shared/config.ts';
import { createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
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

/** The committed migrations, as the journal lists them. */
async function journalEntries(): Promise<
  { idx: number; version: string; when: number; tag: string; breakpoints: boolean }[]
> {
  const journal = JSON.parse(await readFile(join(MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8'));
  return journal.entries;
}

function client(): Sql {
  const c = createSql(testDb.url);
  clients.push(c);
  return c;
}

describe('runMigrations', () => {
  it('applies the schema exactly once when four runners start at the same time on a fresh database', async () => {
    const committed = (await journalEntries()).length;
    expect(committed).toBeGreaterThanOrEqual(2);
    const results = await Promise.all([client(), client(), client(), client()].map((c) => runMigrations(c)));
    const applied = results.map((r) => r.applied).sort();
    expect(applied).toEqual([0, 0, 0, committed]);

    const sql = client();
    const tables = await sql<{ name: string }[]>`
      select table_name as name from information_schema.tables where table_schema = 'public' order by 1`;
    expect(tables.map((t) => t.name)).toEqual([
      'checkpoints',
      'event_conflicts',
      'events',
      'pacers',
      'rejected_events',
      'source_datasets',
    ]);
    const [bookkeeping] = await sql<
      { n: number }[]
    >`select count(*)::int as n from drizzle.__drizzle_migrations`;
    expect(bookkeeping?.n).toBe(committed);
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

  it('migrates a database at 0000_init with checkpoints in it: existing sources become one-chain sources', async () => {
    const [init] = await journalEntries();
    expect(init?.tag).toBe('0000_init');
    const onlyInit = await mkdtemp(join(tmpdir(), 'dsi-migrations-'));
    const old = await createTestDatabase('dsi_migrate_old');
    const sql = createSql(old.url);
    try {
      await mkdir(join(onlyInit, 'meta'));
      await copyFile(join(MIGRATIONS_DIR, '0000_init.sql'), join(onlyInit, '0000_init.sql'));
      await writeFile(join(onlyInit, 'meta', '_journal.json'), JSON.stringify({ entries: [init] }));
      expect(await runMigrations(sql, { migrationsFolder: onlyInit })).toEqual({ applied: 1 });
      await sql`insert into checkpoints (source_id, cursor, position_ts, position_id, pages, events_inserted,
          lease_owner, lease_expires_at, version)
        values ('mid-run', 'c-7', '2026-01-15T12:00:00Z', 'id-7', 7, 35000, 'exec-1', '2026-01-15T12:03:00Z', 9)`;
      await sql`insert into checkpoints (source_id, status, completed_at, pages, version)
        values ('done', 'complete', now(), 600, 601)`;

      const committed = (await journalEntries()).length;
      expect(await runMigrations(sql)).toEqual({ applied: committed - 1 });

      const rows = await sql<Record<string, unknown>[]>`
        select source_id, cursor, pages::int, version, status, lease_owner, chain_of, chain, range_hi_ts,
          range_lo_ts, range_done, chain_mode, chain_note, chains_planned, plan_oldest_ts, resume_cursor,
          resume_position_ts, resume_position_id
        from checkpoints order by source_id`;
      const chainDefaults = {
        chain_of: null,
        chain: 0,
        range_hi_ts: null,
        range_lo_ts: null,
        range_done: false,
        chain_mode: null,
        chain_note: null,
        chains_planned: 1,
        plan_oldest_ts: null,
        resume_cursor: null,
        resume_position_ts: null,
        resume_position_id: null,
      };
      expect(rows).toEqual([
        {
          source_id: 'done',
          cursor: null,
          pages: 600,
          version: 601,
          status: 'complete',
          lease_owner: null,
          ...chainDefaults,
        },
        {
          source_id: 'mid-run',
          cursor: 'c-7',
          pages: 7,
          version: 9,
          status: 'running',
          lease_owner: 'exec-1',
          ...chainDefaults,
        },
      ]);
      const [idx] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_indexes where tablename = 'checkpoints' and indexdef like '%(chain_of)%'`;
      expect(idx?.n).toBe(1);
      await expect(
        sql`update checkpoints set chain_mode = 'several' where source_id = 'done'`,
      ).rejects.toThrow(/checkpoints_chain_mode_check/);
    } finally {
      await sql.end({ timeout: 5 });
      await old.drop();
      await rm(onlyInit, { recursive: true, force: true });
    }
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
    expect(MIGRATIONS_DIR.endsWith('/drizzle')).toBe(true);
  });
});

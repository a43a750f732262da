import { eq } from 'drizzle-orm';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireLease, getCheckpoint } from '#shared/db/checkpoints.ts';
import { createDb, createSql } from '#shared/db/client.ts';
import { describeDbError, withDbErrors } from '#shared/db/connection-errors.ts';
import { DatabaseUnavailableError } from '#shared/db/errors.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { persistPage } from '#shared/db/persist.ts';
import { checkpoints, events } from '#shared/db/schema.ts';
import { ConfigError } from '#shared/errors.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

let testDb: TestDatabase;
let sql: Sql;

beforeAll(async () => {
  testDb = await createTestDatabase('dsi_client');
  sql = createSql(testDb.url);
  await runMigrations(sql);
});
afterAll(async () => {
  await sql?.end({ timeout: 5 });
  await testDb.drop();
});

describe('createSql / createDb on one client', () => {
  it("gives a client drizzle's parsers from birth: a raw query reads the same before and after createDb", async () => {
    const c = createSql(testDb.url);
    try {
      // A new statement text each time: postgres.js keeps the parsers of a prepared statement.
      const read = async (alias: string) =>
        (await c.unsafe(`select '2026-01-01T00:00:00.123Z'::timestamptz as ${alias}`))[0]?.[alias];
      const before = await read('before');
      const db = createDb(c);
      expect(createDb(c)).toBe(db);
      expect(await read('after')).toEqual(before);
      // drizzle decodes instants itself, from their text.
      expect(typeof before).toBe('string');
    } finally {
      await c.end({ timeout: 5 });
    }
  });

  it('decodes the checkpoint the same from the raw page transaction and from drizzle reads', async () => {
    const db = createDb(sql);
    const cp = await acquireLease(db, {
      sourceId: 'mixed',
      owner: 'x',
      nowMs: 1_767_225_600_123,
      ttlMs: 1000,
    });
    const persisted = await persistPage(createDb(sql), {
      sourceId: 'mixed',
      expectedVersion: cp.version,
      owner: 'x',
      events: [
        {
          id: '00000000-0000-4000-8000-000000000001',
          sessionId: '00000000-0000-4000-8000-000000000002',
          userId: '00000000-0000-4000-8000-000000000003',
          type: 'click',
          name: 'n',
          properties: { a: [1, 'two'] },
          occurredAtMs: 1_767_225_600_007,
          deviceType: null,
          browser: 'Firefox',
        },
      ],
      rejects: [],
      pageCursor: null,
      next: {
        cursor: 'c2',
        positionTs: 1_767_225_600_007,
        positionId: '00000000-0000-4000-8000-000000000001',
        hasMore: true,
        nextRequestAtMs: 1_767_225_602_500,
        rateLimit: { limit: 10, remaining: 9, resetSeconds: 60 },
        totalReported: null,
      },
      requestsMade: 1,
      rateLimitedSeen: 0,
    });

    // The checkpoint repository (drizzle): instants as epoch ms, exactly as written.
    const viaRepo = await getCheckpoint(db, 'mixed');
    expect(viaRepo).toEqual(persisted.checkpoint);
    expect(Number.isInteger(viaRepo?.updatedAtMs)).toBe(true);
    expect(viaRepo?.leaseExpiresAtMs).toBe(1_767_225_601_123);
    expect(viaRepo?.positionTs).toBe(1_767_225_600_007);
    expect(viaRepo?.nextRequestAtMs).toBe(1_767_225_602_500);
    expect(viaRepo?.lastRateLimit).toEqual({ limit: 10, remaining: 9, resetSeconds: 60 });

    // drizzle's own rows: Dates and parsed jsonb.
    const [row] = await db.select().from(events).where(eq(events.sourceId, 'mixed'));
    expect(row?.occurredAt).toBeInstanceOf(Date);
    expect(row?.occurredAt.getTime()).toBe(1_767_225_600_007);
    expect(row?.properties).toEqual({ a: [1, 'two'] });
    const [c] = await db.select().from(checkpoints).where(eq(checkpoints.sourceId, 'mixed'));
    expect(c?.nextRequestAt?.getTime()).toBe(1_767_225_602_500);
    expect(c?.eventsInserted).toBe(1);

    // A raw query on the same client converts in SQL when it needs a number.
    const [raw] = await sql<{ ms: number }[]>`
      select (extract(epoch from occurred_at) * 1000)::float8 as ms from events where source_id = 'mixed'`;
    expect(raw?.ms).toBe(1_767_225_600_007);
  });

  it('uses one connection and sets application_name and statement_timeout', async () => {
    const c = createSql(testDb.url, { applicationName: 'dsi-client-test', statementTimeoutMs: 1234 });
    try {
      const [row] = await c<{ app: string; timeout: string }[]>`
        select current_setting('application_name') as app, current_setting('statement_timeout') as timeout`;
      expect(row).toEqual({ app: 'dsi-client-test', timeout: '1234ms' });
      expect(c.options.max).toBe(1);
    } finally {
      await c.end({ timeout: 5 });
    }
  });

  it('keeps postgres.js trying each host of a multi-host URL (our TCP_NODELAY socket only serves one host)', async () => {
    const u = new URL(testDb.url);
    // Port 1 refuses at once; postgres.js must go on to the real server.
    const multi = `postgres://${u.username}@127.0.0.1:1,${u.hostname}:${u.port || 5432}${u.pathname}`;
    const c = createSql(multi, { connectTimeoutSeconds: 5 });
    try {
      const [row] = await c<{ one: number }[]>`select 1 as one`;
      expect(row?.one).toBe(1);
    } finally {
      await c.end({ timeout: 5 });
    }
  });

  it('rejects a malformed connection string with a ConfigError saying what to set', () => {
    expect(() => createSql('mysql://nope')).toThrow(ConfigError);
    expect(() => createSql('mysql://nope')).toThrow(/DATABASE_URL/);
  });
});

describe('unreachable database', () => {
  it('surfaces as DatabaseUnavailableError naming host:port and the fix, never the password', async () => {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    const url = 'postgres://someone:s3cret-pw@127.0.0.1:1/ingest';
    const c = createSql(url, { connectTimeoutSeconds: 2 });
    try {
      const error = await getCheckpoint(createDb(c), 'default').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DatabaseUnavailableError);
      const message = (error as Error).message;
      expect(message).toContain('127.0.0.1:1');
      expect(message).toContain('DATABASE_URL');
      expect(message).toMatch(/PostgreSQL is running/);
      expect(message).not.toContain('s3cret-pw');
      expect((error as DatabaseUnavailableError).transient).toBe(true);

      const described = describeDbError(
        Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
        url,
      );
      expect((described as Error).message).toContain('127.0.0.1:1/ingest');
      expect((described as Error).message).not.toContain('s3cret-pw');
    } finally {
      await c.end({ timeout: 1 });
    }
  });

  it('reports a wrong database name as a ConfigError, and leaves other errors alone', async () => {
    const u = new URL(testDb.url);
    u.pathname = '/dsi_does_not_exist';
    const c = createSql(u.toString());
    try {
      const error = await withDbErrors(c, () => c`select 1`).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toMatch(/database name/);
    } finally {
      await c.end({ timeout: 1 });
    }
    const plain = await withDbErrors(sql, () => sql`select 1/0`).catch((e: unknown) => e);
    expect((plain as { code?: string }).code).toBe('22012');
  });
});

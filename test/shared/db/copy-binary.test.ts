import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSql } from '#shared/db/client.ts';
import { copyIn, EVENT_COPY_COLUMNS, encodeEventsBinary } from '#shared/db/copy-binary.ts';
import { CopyRefusedError, NotEncodableError } from '#shared/db/errors.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { normalisedEvent } from '#test/support/events.ts';

let testDb: TestDatabase;
let sql: Sql;

beforeAll(async () => {
  testDb = await createTestDatabase('dsi_copy');
  sql = createSql(testDb.url, { max: 1 });
  await runMigrations(sql);
});
afterAll(async () => {
  await sql?.end({ timeout: 5 });
  await testDb.drop();
});

const event = normalisedEvent;

const COPY = `copy events (${EVENT_COPY_COLUMNS}) from stdin (format binary)`;

interface Row {
  id: string;
  sessionId: string;
  userId: string;
  type: string;
  name: string;
  properties: string | null;
  micros: string;
  deviceType: string | null;
  browser: string | null;
  sourceId: string;
  hasIngestedAt: boolean;
}

async function rowsOf(sourceId: string): Promise<Map<string, Row>> {
  const rows = await sql<Row[]>`
    select id, session_id as "sessionId", user_id as "userId", type, name, properties::text as properties,
      ((extract(epoch from occurred_at) * 1000000)::numeric(30,0))::text as micros,
      device_type as "deviceType", browser, source_id as "sourceId", ingested_at is not null as "hasIngestedAt"
    from events where source_id = ${sourceId}`;
  return new Map(rows.map((r) => [r.id, r]));
}

/** What the SQL path (json_to_recordset) stores for the same value: SQL NULL for null, else jsonb of the JSON text. */
async function expectedProperties(value: unknown): Promise<string | null> {
  const [row] = await sql<{ t: string | null }[]>`
    select p::text as t from json_to_recordset(${JSON.stringify([{ p: value ?? null }])}::text::json) as r(p jsonb)`;
  return row ? row.t : 'missing';
}

describe('encodeEventsBinary + copyIn', () => {
  it('stores every column exactly as the SQL path would, NULLs, unicode and instants before 2000 included', async () => {
    const sourceId = `src-${randomUUID()}`;
    const events = [
      event(),
      event({ deviceType: null, browser: null, properties: null }),
      event({
        type: 'emoji 🚀 漢字 مرحبا é',
        name: "'; drop table events; --",
        properties: ['a', 1.5, { b: null }],
      }),
      event({ properties: 'a string', occurredAtMs: Date.UTC(1999, 11, 31, 23, 59, 59, 999) }),
      event({ properties: { n: 1e21, deep: { x: [true, false] } }, occurredAtMs: Date.UTC(1970, 0, 1) }),
      event({ occurredAtMs: Date.UTC(2026, 0, 1) + 0.25 }),
      event({ id: randomUUID().toUpperCase() }),
      event({ name: 'x'.repeat(100_000) }),
    ];
    await sql.begin((tx) => copyIn(tx, COPY, encodeEventsBinary(events, sourceId)));
    const rows = await rowsOf(sourceId);
    expect(rows.size).toBe(events.length);
    for (const e of events) {
      const row = rows.get(e.id.toLowerCase());
      expect(row).toMatchObject({
        sessionId: e.sessionId,
        userId: e.userId,
        type: e.type,
        name: e.name,
        deviceType: e.deviceType,
        browser: e.browser,
        sourceId,
        hasIngestedAt: true,
      });
      expect(row?.properties).toBe(await expectedProperties(e.properties));
      expect(row?.micros).toBe(String(Math.round(e.occurredAtMs * 1000)));
    }
  });

  it('keeps arbitrary millisecond instants exact (property over 2,000 instants, 1900-2100)', async () => {
    const sourceId = `src-${randomUUID()}`;
    const instants = fc.sample(fc.integer({ min: Date.UTC(1900, 0, 1), max: Date.UTC(2100, 0, 1) }), {
      numRuns: 2_000,
      seed: 7,
    });
    const events = instants.map((ms) => event({ occurredAtMs: ms }));
    await sql.begin((tx) => copyIn(tx, COPY, encodeEventsBinary(events, sourceId)));
    const rows = await rowsOf(sourceId);
    for (const e of events) expect(rows.get(e.id)?.micros).toBe(String(e.occurredAtMs * 1000));
  });

  it('refuses what it cannot represent exactly instead of guessing', () => {
    expect(() => encodeEventsBinary([event({ id: 'not-a-uuid' })], 's')).toThrow(NotEncodableError);
    expect(() =>
      encodeEventsBinary([event({ sessionId: '{12345678-1234-1234-1234-123456789abc}' })], 's'),
    ).toThrow(/sessionId is not a canonical UUID/);
    expect(() =>
      encodeEventsBinary([event({ userId: 'g2345678-1234-1234-1234-123456789abc' })], 's'),
    ).toThrow(NotEncodableError);
    expect(() => encodeEventsBinary([event({ occurredAtMs: Number.NaN })], 's')).toThrow(
      /not a representable instant/,
    );
    expect(() => encodeEventsBinary([event({ properties: () => 1 })], 's')).toThrow(/not JSON/);
  });

  it('rejects with CopyRefusedError on a duplicate key inside a transaction, and the savepoint rollback lets it go on', async () => {
    const sourceId = `src-${randomUUID()}`;
    const existing = event();
    await sql.begin((tx) => copyIn(tx, COPY, encodeEventsBinary([existing], sourceId)));
    const fresh = event();
    const outcome = await sql.begin(async (tx) => {
      const error = await tx
        .savepoint((sp) => copyIn(sp, COPY, encodeEventsBinary([fresh, existing], sourceId)))
        .catch((e: unknown) => e);
      // The transaction is usable after the savepoint's rollback: write something else.
      await copyIn(tx, COPY, encodeEventsBinary([event()], sourceId));
      return error;
    });
    expect(outcome).toBeInstanceOf(CopyRefusedError);
    const rows = await rowsOf(sourceId);
    expect(rows.size).toBe(2);
    expect(rows.has(fresh.id)).toBe(false);
  });

  it('fails the transaction with CopyRefusedError when there is no savepoint, and the connection stays usable', async () => {
    const sourceId = `src-${randomUUID()}`;
    const e = event();
    await sql.begin((tx) => copyIn(tx, COPY, encodeEventsBinary([e], sourceId)));
    const error = await sql
      .begin((tx) => copyIn(tx, COPY, encodeEventsBinary([event(), e], sourceId)))
      .catch((x: unknown) => x);
    expect(error).toBeInstanceOf(CopyRefusedError);
    expect((error as Error).message).toMatch(/refused the COPY .*transaction is aborted/);
    const [row] = await sql<
      { n: number }[]
    >`select count(*)::int as n from events where source_id = ${sourceId}`;
    expect(row?.n).toBe(1);
  });

  it('rejects with CopyRefusedError naming the server error when a value is refused (a NUL in text)', async () => {
    const sourceId = `src-${randomUUID()}`;
    const error = await sql
      .begin((tx) => copyIn(tx, COPY, encodeEventsBinary([event({ name: 'nul \u0000 here' })], sourceId)))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CopyRefusedError);
    expect((error as Error).message).toMatch(/refused the COPY/);
    expect((await rowsOf(sourceId)).size).toBe(0);
  });

  it('passes a connection failure through as it is, not as a refusal, and settles', async () => {
    const other = createSql(testDb.url, { max: 1 });
    let copying: Promise<unknown> | null = null;
    // sql.begin may reject as soon as it sees the socket close, while its callback is still
    // polling below: the copy must be awaited through the callback's own progress, not begin's.
    let reachedCopy!: () => void;
    const atCopy = new Promise<void>((r) => {
      reachedCopy = r;
    });
    const [{ pid } = { pid: 0 }] = await other<{ pid: number }[]>`select pg_backend_pid() as pid`;
    const transaction = other
      .begin(async (tx) => {
        await sql`select pg_terminate_backend(${pid})`;
        // Wait until the backend is gone, so the COPY meets a closed connection.
        for (let i = 0; i < 100; i++) {
          const [row] = await sql<
            { n: number }[]
          >`select count(*)::int as n from pg_stat_activity where pid = ${pid}`;
          if (row?.n === 0) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        copying = copyIn(tx, COPY, encodeEventsBinary([event()], 'gone')).catch((e: unknown) => e);
        reachedCopy();
        return copying;
      })
      .catch((e: unknown) => e);
    await transaction;
    await atCopy;
    await other.end({ timeout: 1 });
    expect(copying).not.toBeNull();
    // copyIn's own outcome, not sql.begin's: it settled, with the connection's error.
    const error = await Promise.race([
      copying,
      new Promise((r) => setTimeout(() => r('still waiting'), 5000)),
    ]);
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(CopyRefusedError);
  });
});

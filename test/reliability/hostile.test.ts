import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configDefaults } from '#shared/config.ts';
import { decodeCursor } from '#shared/cursor.ts';
import { createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { createStore } from '#shared/db/store.ts';
import { UpstreamProtocolError } from '#shared/errors.ts';
import type { StepDeps } from '#shared/step/index.ts';
import { createDataSyncClient } from '#shared/upstream/client.ts';
import { INVALID_UTF8_REASON } from '#shared/upstream/normalise.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import {
  cursorAt,
  type HostileResponse,
  type HostileServer,
  pageBody,
  startHostileServer,
} from '#test/support/hostile-server.ts';
import { realClock } from '#test/support/pipeline.ts';
import { driveToDone, report, sourceCounts } from './support.ts';

let db: TestDatabase;
let sql: Sql;

beforeAll(async () => {
  db = await createTestDatabase('dsi_rel_hostile');
  sql = createSql(db.url, { applicationName: 'datasync-reliability' });
  await runMigrations(sql);
});

afterAll(async () => {
  await sql?.end({ timeout: 5 });
  await db?.drop();
});

const BASE_MS = Date.parse('2026-01-27T19:20:30.000Z');
let nextIndex = 0;

/** A valid event in the live shape; every call gets a fresh id, an older instant than the last. */
function event(
  over: Record<string, unknown> = {},
): Record<string, unknown> & { id: string; timestamp: number } {
  const i = nextIndex++;
  const hex = i.toString(16).padStart(12, '0');
  const sessionId = `5e55105e-0000-4000-8000-${hex}`;
  return {
    id: `e0e0e0e0-0000-4000-8000-${hex}`,
    sessionId,
    userId: `05e20000-0000-4000-8000-${hex}`,
    type: 'click',
    name: 'event_abc123',
    properties: { page: '/home' },
    timestamp: BASE_MS - i * 1000,
    session: { id: sessionId, deviceType: 'desktop', browser: 'Firefox' },
    ...over,
  };
}

type Page = { data: unknown[] | Buffer; hasMore: boolean; last?: { id: string; timestamp: number } };

/**
 * Serves `pages` in order, following the cursor the way the live service does: the next page
 * is the one after the position (ts, id) the cursor carries, whatever its `exp`.
 */
function scripted(pages: Page[]): (r: { cursor: string | null }) => HostileResponse {
  const cursorOf = (p: Page) => (p.last ? cursorAt(p.last.timestamp, p.last.id) : null);
  return ({ cursor }) => {
    let index = 0;
    if (cursor) {
      const pos = decodeCursor(cursor);
      index = pages.findIndex((p) => p.last?.id === pos.id && p.last.timestamp === pos.ts) + 1;
      if (index === 0) throw new Error(`hostile script: no page after ${cursor}`);
    }
    const page = pages[index]!;
    const next = page.hasMore ? cursorOf(page) : null;
    if (Buffer.isBuffer(page.data)) {
      const head = Buffer.from('{"data":', 'utf8');
      const tail = Buffer.from(pageBody('[]', page.hasMore, next).slice('{"data":[]'.length), 'utf8');
      return { body: Buffer.concat([head, page.data, tail]) };
    }
    return { body: pageBody(page.data, page.hasMore, next) };
  };
}

function depsFor(server: HostileServer): StepDeps {
  return {
    store: createStore(sql),
    upstream: createDataSyncClient({ baseUrl: server.url, apiKey: server.apiKey, timeoutMs: 30_000 }),
    clock: realClock,
    logger: { info: () => {}, warn: () => {}, error: () => {} },
    metrics: { add: () => {} },
    config: {
      ...configDefaults,
      pageSize: 5000,
      minSpacingMs: 0,
      retryBudgetMs: 2_000,
      maxInTaskSleepMs: 1_000,
      leaseTtlMs: 60_000,
      random: () => 0.01,
    },
  };
}

async function storedRow(id: string) {
  const [row] = await sql<{ name: string; type: string; props: string; ms: string }[]>`
    select name, type, properties::text as props, (extract(epoch from occurred_at) * 1000)::bigint::text as ms
    from events where id = ${id}`;
  return row
    ? { name: row.name, type: row.type, properties: JSON.parse(row.props), ms: Number(row.ms) }
    : null;
}

async function rejectReasons(sourceId: string): Promise<string[]> {
  const rows = await sql<{ reason: string }[]>`
    select reason from rejected_events where source_id = ${sourceId} order by id`;
  return rows.map((r) => r.reason);
}

function nested(depth: number): unknown {
  let v: unknown = { leaf: 'bottom' };
  for (let i = 0; i < depth; i++) v = { d: i, next: v };
  return v;
}

describe('hostile input from a crafted upstream', () => {
  it('stores hostile but valid values exactly, rejects the unstorable with a reason, and follows an empty page', async () => {
    const sqlish = event({
      name: "x'); drop table events; --",
      type: "page_view' or '1'='1",
      properties: { 'key\'"; delete from checkpoints; --': "$1 $$ \\ E'\\x00' %s ?", arr: ["'", '"', '`'] },
    });
    const longName = event({ name: 'n'.repeat(1024 * 1024) });
    const deep = event({ properties: nested(500) });
    const controls = event({
      name: 'a\u0001b\u001fc\u007fd\u200be',
      properties: { t: 'tab\there\nnewline\r' },
    });
    const unicode = event({ name: 'événement_😀_日本', properties: { emoji: '👍🏽', rtl: 'שלום' } });
    const nulInName = event({ name: 'bad\u0000name' });
    const nulInProps = event({ properties: { k: 'v\u0000' } });
    const page1 = [sqlish, longName, deep, controls, unicode, nulInName, nulInProps];

    const huge = event({
      properties: { blob: 'p'.repeat(5 * 1024 * 1024), list: Array.from({ length: 1000 }, (_, i) => i) },
    });
    const page2 = [huge];

    // Bytes that are not UTF-8 inside a JSON string: the body is decoded as UTF-8 with replacement.
    const binary = event({ name: 'PLACEHOLDER' });
    const json = JSON.stringify([binary]);
    const [before, after] = json.split('PLACEHOLDER') as [string, string];
    const page3Bytes = Buffer.concat([
      Buffer.from(`${before}bin`, 'utf8'),
      Buffer.from([0xff, 0xfe, 0xc3]),
      Buffer.from(`end${after}`, 'utf8'),
    ]);

    // An empty page that says there is more, with a cursor that moves on: follow it.
    const emptyMarker = event();
    const final = [event(), event()];

    const pages: Page[] = [
      { data: page1, hasMore: true, last: nulInProps },
      { data: page2, hasMore: true, last: huge },
      { data: page3Bytes, hasMore: true, last: binary },
      { data: [], hasMore: true, last: emptyMarker },
      { data: final, hasMore: false },
    ];
    const server = await startHostileServer(scripted(pages));
    try {
      const run = await driveToDone(depsFor(server), {
        executionId: 'hostile-values',
        sourceId: 'hostile-values',
        maxSteps: 20,
      });
      expect(run.outputs).toBe(5);
      expect(server.requests()).toHaveLength(5);

      for (const e of [sqlish, longName, deep, unicode, huge]) {
        const row = await storedRow(e.id);
        expect(row, e.id).not.toBeNull();
        expect(row?.name).toBe(e.name);
        expect(row?.type).toBe(e.type);
        expect(row?.properties).toEqual(e.properties);
        expect(row?.ms).toBe(e.timestamp);
      }
      expect((await storedRow(longName.id))?.name.length).toBe(1024 * 1024);
      // Control characters inside a value are data and stay; only those around it are trimmed.
      expect((await storedRow(controls.id))?.name).toBe('a\u0001b\u001fc\u007fd\u200be');
      expect((await storedRow(controls.id))?.properties).toEqual(controls.properties);
      // Invalid UTF-8: the event is a reject (its raw kept with U+FFFD), never stored altered,
      // never a refused page.
      expect(await storedRow(binary.id)).toBeNull();

      expect(await storedRow(nulInName.id)).toBeNull();
      expect(await storedRow(nulInProps.id)).toBeNull();
      const reasons = await rejectReasons('hostile-values');
      expect(reasons).toHaveLength(3);
      expect(reasons[0]).toMatch(
        /^name: contains U\+0000 or an unpaired surrogate, which PostgreSQL cannot store/,
      );
      expect(reasons[1]).toBe(
        'properties: contains U+0000 or an unpaired surrogate, which PostgreSQL jsonb cannot store',
      );
      expect(reasons[2]).toBe(INVALID_UTF8_REASON);

      const c = await sourceCounts(sql, 'hostile-values');
      const valid = page1.length - 2 + page2.length + final.length;
      expect(c.rows).toBe(valid);
      expect(c.checkpoint?.status).toBe('complete');
      expect(c.checkpoint?.eventsInserted).toBe(valid);
      expect(c.checkpoint?.rejected).toBe(3);
      expect(c.checkpoint?.pages).toBe(5);
      const tables =
        await sql`select count(*)::int as n from pg_tables where tablename in ('events', 'checkpoints')`;
      expect(tables[0]?.n).toBe(2);
      report('hostile-values', {
        runs: 1,
        faults: {
          sqlMeta: 1,
          name1MB: 1,
          depth500: 1,
          props5MB: 1,
          nonUtf8: 1,
          controls: 1,
          nul: 2,
          emptyHasMore: 1,
        },
        expected: valid,
        stored: c.rows,
        duplicates: c.rows - c.distinctIds,
        rejects: c.rejectedRows,
      });
    } finally {
      await server.close();
    }
  });

  it('a page of 5000 rejects stores 5000 reasons and completes', async () => {
    const bad = Array.from({ length: 5000 }, (_, i) =>
      i % 2 === 0 ? event({ timestamp: `not a date ${i}` }) : event({ id: `not-a-uuid-${i}` }),
    );
    const server = await startHostileServer(scripted([{ data: bad, hasMore: false }]));
    try {
      await driveToDone(depsFor(server), {
        executionId: 'hostile-rejects',
        sourceId: 'hostile-rejects',
        maxSteps: 5,
      });
      const reasons = await rejectReasons('hostile-rejects');
      expect(reasons).toHaveLength(5000);
      expect(reasons[0]).toBe('timestamp: unparseable value "not a date 0"');
      expect(reasons[1]).toBe('id: not a UUID "not-a-uuid-1"');
      expect(reasons.filter((r) => r.startsWith('timestamp: unparseable value "not a date '))).toHaveLength(
        2500,
      );
      expect(reasons.filter((r) => r.startsWith('id: not a UUID "not-a-uuid-'))).toHaveLength(2500);
      const c = await sourceCounts(sql, 'hostile-rejects');
      expect(c.rows).toBe(0);
      expect(c.checkpoint?.status).toBe('complete');
      expect(c.checkpoint?.rejected).toBe(5000);
      report('hostile-5000-rejects', {
        runs: 1,
        faults: 5000,
        expected: 0,
        stored: c.rows,
        duplicates: 0,
        rejects: c.rejectedRows,
      });
    } finally {
      await server.close();
    }
  });

  it('hasMore: true with a null cursor fails clearly after one request, storing nothing of that page', async () => {
    const first = [event(), event()];
    const orphan = [event()];
    const server = await startHostileServer(
      scripted([
        { data: first, hasMore: true, last: first[1]! },
        // hasMore without a cursor: `last` absent makes the script send nextCursor null.
        { data: orphan, hasMore: true },
      ]),
    );
    try {
      const error = await driveToDone(depsFor(server), {
        executionId: 'hostile-nocursor',
        sourceId: 'hostile-nocursor',
        maxSteps: 10,
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UpstreamProtocolError);
      expect((error as Error).message).toContain('hasMore=true but carries no nextCursor');
      expect(server.requests()).toHaveLength(2);
      const c = await sourceCounts(sql, 'hostile-nocursor');
      expect(c.rows).toBe(2);
      expect(await storedRow(orphan[0]!.id)).toBeNull();
      expect(c.checkpoint?.lastError).toContain('UpstreamProtocolError');
      expect(c.checkpoint?.positionId).toBe(first[1]!.id);
      expect(c.checkpoint?.leaseOwner ?? null).toBeNull();
      report('hostile-null-cursor', {
        runs: 1,
        faults: 1,
        expected: 2,
        stored: c.rows,
        duplicates: 0,
        rejects: c.rejectedRows,
      });
    } finally {
      await server.close();
    }
  });

  it('a cursor that does not advance (the same page forever) stops after the second request', async () => {
    const events = Array.from({ length: 10 }, () => event());
    const last = events[9]!;
    const server = await startHostileServer(() => ({
      body: pageBody(events, true, cursorAt(last.timestamp, last.id)),
    }));
    try {
      const error = await driveToDone(depsFor(server), {
        executionId: 'hostile-stuck',
        sourceId: 'hostile-stuck',
        maxSteps: 50,
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UpstreamProtocolError);
      expect((error as Error).message).toContain('same position as the request');
      expect((error as Error).message).toContain(`id=${last.id}`);
      expect(server.requests()).toHaveLength(2);
      const c = await sourceCounts(sql, 'hostile-stuck');
      expect(c.rows).toBe(10);
      expect(c.distinctIds).toBe(10);
      expect(c.checkpoint?.pages).toBe(1);
      expect(c.checkpoint?.eventsInserted).toBe(10);
      report('hostile-stuck-cursor', {
        runs: 1,
        faults: 1,
        expected: 10,
        stored: c.rows,
        duplicates: 0,
        rejects: 0,
      });
    } finally {
      await server.close();
    }
  });
});

import fc from 'fast-check';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireLease, type Checkpoint, getCheckpoint } from '#shared/db/checkpoints.ts';
import { createDb, createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { type PersistPageInput, persistPage } from '#shared/db/persist.ts';
import { CheckpointConflictError } from '#shared/errors.ts';
import type { NormalisedEvent } from '#shared/upstream/types.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { normalisedEvent, T0 } from '#test/support/events.ts';

let testDb: TestDatabase;
let sql: Sql;
let sourceSeq = 0;

beforeAll(async () => {
  testDb = await createTestDatabase('dsi_persist');
  sql = createSql(testDb.url, { max: 4 });
  await runMigrations(sql);
});
afterAll(async () => {
  await sql?.end({ timeout: 5 });
  await testDb.drop();
});

const event = normalisedEvent;

async function freshSource(owner = 'exec-1'): Promise<{ sourceId: string; cp: Checkpoint }> {
  const sourceId = `src-${++sourceSeq}`;
  const cp = await acquireLease(createDb(sql), { sourceId, owner, nowMs: Date.now(), ttlMs: 600_000 });
  return { sourceId, cp };
}

function input(
  sourceId: string,
  cp: Checkpoint,
  events: NormalisedEvent[],
  over: Partial<PersistPageInput> = {},
): PersistPageInput {
  const last = events.at(-1);
  return {
    sourceId,
    expectedVersion: cp.version,
    owner: 'exec-1',
    events,
    rejects: [],
    pageCursor: cp.cursor,
    next: {
      cursor: `cursor-after-${cp.pages + 1}`,
      positionTs: last?.occurredAtMs ?? null,
      positionId: last?.id ?? null,
      hasMore: true,
      nextRequestAtMs: T0 + 2_200,
      rateLimit: { limit: 10, remaining: 7, resetSeconds: 42 },
      totalReported: 3_000_000,
    },
    requestsMade: 1,
    rateLimitedSeen: 0,
    ...over,
  };
}

async function count(table: 'events' | 'rejected_events', sourceId: string): Promise<number> {
  const [row] = await sql.unsafe<{ n: number }[]>(
    `select count(*)::int as n from ${table} where source_id = $1`,
    [sourceId],
  );
  return row?.n ?? -1;
}

describe('persistPage', () => {
  it('inserts the page exactly and advances the checkpoint by its numbers', async () => {
    const { sourceId, cp } = await freshSource();
    const events = Array.from({ length: 250 }, (_, i) => event({ occurredAtMs: T0 + i }));
    const r = await persistPage(
      createDb(sql),
      input(sourceId, cp, events, { requestsMade: 3, rateLimitedSeen: 1 }),
    );
    expect(r).toMatchObject({
      inserted: 250,
      duplicates: 0,
      rejectsInserted: 0,
      version: cp.version + 1,
      writePath: 'copy',
    });
    expect(await count('events', sourceId)).toBe(250);
    expect(r.checkpoint).toMatchObject({
      cursor: 'cursor-after-1',
      positionTs: T0 + 249,
      positionId: events[249]?.id,
      pages: 1,
      eventsInserted: 250,
      duplicatesSkipped: 0,
      requests: 1 + 2,
      rateLimited: 1,
      totalReported: 3_000_000,
      nextRequestAtMs: T0 + 2_200,
      lastRateLimit: { limit: 10, remaining: 7, resetSeconds: 42 },
      status: 'running',
      completedAtMs: null,
      version: cp.version + 1,
    });
    expect(await getCheckpoint(createDb(sql), sourceId)).toEqual(r.checkpoint);
  });

  it('counts a page committed twice as duplicates and never inserts twice', async () => {
    const { sourceId, cp } = await freshSource();
    const events = Array.from({ length: 100 }, () => event());
    const first = await persistPage(createDb(sql), input(sourceId, cp, events));
    const second = await persistPage(createDb(sql), input(sourceId, first.checkpoint, events));
    expect(first.writePath).toBe('copy');
    // Every id is stored already: the COPY is refused, the INSERT ... ON CONFLICT path counts them.
    expect(second).toMatchObject({ inserted: 0, duplicates: 100, writePath: 'insert' });
    expect(second.checkpoint).toMatchObject({ pages: 2, eventsInserted: 100, duplicatesSkipped: 100 });
    expect(await count('events', sourceId)).toBe(100);
  });

  it('counts ids repeated inside one page, and ids overlapping an earlier page, exactly', async () => {
    const { sourceId, cp } = await freshSource();
    const a = event();
    const b = event();
    const first = await persistPage(createDb(sql), input(sourceId, cp, [a, b]));
    const c = event();
    // c twice within the page, a again from the previous page: 1 new row, 3 duplicates.
    const r = await persistPage(
      createDb(sql),
      input(sourceId, first.checkpoint, [c, a, { ...c, name: 'second copy' }, a]),
    );
    expect(r).toMatchObject({ inserted: 1, duplicates: 3, writePath: 'insert' });
    expect(r.checkpoint).toMatchObject({ eventsInserted: 3, duplicatesSkipped: 3 });
    const [row] = await sql<{ name: string }[]>`select name from events where id = ${c.id}`;
    expect(row?.name).toBe('event_abc');
  });

  it('keeps the COPY path for ids repeated only inside the page, storing the first occurrence', async () => {
    const { sourceId, cp } = await freshSource();
    const a = event();
    const b = event();
    const r = await persistPage(
      createDb(sql),
      input(sourceId, cp, [a, b, { ...a, name: 'later copy' }, b, a]),
    );
    expect(r).toMatchObject({ inserted: 2, duplicates: 3, writePath: 'copy' });
    expect(r.checkpoint).toMatchObject({ eventsInserted: 2, duplicatesSkipped: 3 });
    const [row] = await sql<{ name: string }[]>`select name from events where id = ${a.id}`;
    expect(row?.name).toBe('event_abc');
  });

  it('stores ids another source already holds under this source too: each source keeps its own rows', async () => {
    const mine = await freshSource();
    const theirs = await freshSource('exec-2');
    const shared = Array.from({ length: 40 }, () => event());
    const onlyMine = Array.from({ length: 60 }, () => event());
    // The other source committed its page first; the key is (source_id, id), so ours is not refused.
    await persistPage(createDb(sql), { ...input(theirs.sourceId, theirs.cp, shared), owner: 'exec-2' });
    const r = await persistPage(
      createDb(sql),
      input(mine.sourceId, mine.cp, [...onlyMine.slice(0, 30), ...shared, ...onlyMine.slice(30)]),
    );
    expect(r).toMatchObject({ inserted: 100, duplicates: 0, writePath: 'copy' });
    expect(await count('events', mine.sourceId)).toBe(100);
    expect(await count('events', theirs.sourceId)).toBe(40);
  });

  it('reports writePath none and moves the checkpoint for a page without valid events', async () => {
    const { sourceId, cp } = await freshSource();
    const r = await persistPage(createDb(sql), input(sourceId, cp, []));
    expect(r).toMatchObject({ inserted: 0, duplicates: 0, writePath: 'none' });
    expect(r.checkpoint.pages).toBe(cp.pages + 1);
  });

  it('rolls everything back on a stale expectedVersion and throws CheckpointConflictError', async () => {
    const { sourceId, cp } = await freshSource();
    const moved = await persistPage(createDb(sql), input(sourceId, cp, [event()]));
    const stale = input(sourceId, cp, [event(), event()], {
      rejects: [{ raw: { id: 'x', timestamp: 'garbage' }, reason: 'timestamp: unparseable' }],
    });
    const error = await persistPage(createDb(sql), stale).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CheckpointConflictError);
    expect((error as Error).message).toContain(`expected version ${cp.version}`);
    expect((error as Error).message).toContain(`found version ${moved.version}`);
    expect(await count('events', sourceId)).toBe(1);
    expect(await count('rejected_events', sourceId)).toBe(0);
    expect(await getCheckpoint(createDb(sql), sourceId)).toEqual(moved.checkpoint);
  });

  it('refuses a writer that no longer holds the lease', async () => {
    const { sourceId, cp } = await freshSource();
    const error = await persistPage(createDb(sql), input(sourceId, cp, [event()], { owner: 'exec-2' })).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(CheckpointConflictError);
    expect((error as Error).message).toContain('lease held by exec-1');
    expect(await count('events', sourceId)).toBe(0);
  });

  it('lets exactly one of two concurrent writers with the same expectedVersion win', async () => {
    const { sourceId, cp } = await freshSource();
    const pageA = Array.from({ length: 500 }, () => event());
    const pageB = Array.from({ length: 500 }, () => event());
    const results = await Promise.allSettled([
      persistPage(createDb(sql), input(sourceId, cp, pageA)),
      persistPage(createDb(sql), input(sourceId, cp, pageB)),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r) => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect((lost[0] as PromiseRejectedResult).reason).toBeInstanceOf(CheckpointConflictError);
    expect(await count('events', sourceId)).toBe(500);
    const after = await getCheckpoint(createDb(sql), sourceId);
    expect(after).toMatchObject({ pages: 1, eventsInserted: 500, version: cp.version + 1 });
  });

  it('marks the source complete on the last page', async () => {
    const { sourceId, cp } = await freshSource();
    const before = Date.now();
    const r = await persistPage(
      createDb(sql),
      input(sourceId, cp, [event()], {
        next: {
          cursor: null,
          positionTs: T0,
          positionId: null,
          hasMore: false,
          nextRequestAtMs: T0,
          rateLimit: null,
          totalReported: null,
        },
      }),
    );
    expect(r.checkpoint.status).toBe('complete');
    expect(r.checkpoint.cursor).toBeNull();
    expect(r.checkpoint.completedAtMs).toBeGreaterThanOrEqual(before - 60_000);
    // The lease goes back in the same commit: a crash right after it leaves no stale lease.
    expect(r.checkpoint.leaseOwner).toBeNull();
    expect(r.checkpoint.leaseExpiresAtMs).toBeNull();
    expect((await getCheckpoint(createDb(sql), sourceId))?.leaseOwner).toBeNull();
    // Absent values keep what was known before instead of erasing it.
    expect(r.checkpoint.totalReported).toBeNull();
    expect(r.checkpoint.positionTs).toBe(T0);
  });

  it('stores each distinct rejected row once, with its reason, raw JSON text and page cursor', async () => {
    const { sourceId, cp } = await freshSource();
    const hostileRaw = { id: 'evil\u0000id', timestamp: '2026-01-01', note: 'NUL \u0000 and lone \ud800' };
    const rejects = [
      { raw: { id: 'a1', timestamp: null }, reason: 'timestamp: missing' },
      { raw: hostileRaw, reason: 'timestamp: no time zone in "2026-01-01" \u0000' },
      { raw: 'not an object', reason: 'event: not an object (string)' },
      { raw: { id: 'a1', timestamp: null }, reason: 'timestamp: missing' },
    ];
    const first = await persistPage(createDb(sql), input(sourceId, cp, [event()], { rejects }));
    expect(first.rejectsInserted).toBe(3);
    expect(first.checkpoint.rejected).toBe(3);
    // The same rejects served again on the next page are not stored again.
    const second = await persistPage(
      createDb(sql),
      input(sourceId, first.checkpoint, [], { rejects: rejects.slice(0, 2) }),
    );
    expect(second.rejectsInserted).toBe(0);
    expect(second.checkpoint.rejected).toBe(3);

    const rows = await sql<
      { eventId: string | null; reason: string; raw: string; pageCursor: string | null }[]
    >`
      select event_id as "eventId", reason, raw, page_cursor as "pageCursor"
      from rejected_events where source_id = ${sourceId} order by id`;
    expect(rows).toHaveLength(3);
    expect(rows[0]).toEqual({
      eventId: 'a1',
      reason: 'timestamp: missing',
      raw: '{"id":"a1","timestamp":null}',
      pageCursor: null,
    });
    expect(JSON.parse(rows[1]?.raw ?? '')).toEqual(JSON.parse(JSON.stringify(hostileRaw)));
    expect(rows[1]?.raw).toBe(JSON.stringify(hostileRaw));
    expect(rows[1]?.eventId).toBe('evil\\u0000id');
    expect(rows[1]?.reason).toBe('timestamp: no time zone in "2026-01-01" \\u0000');
    expect(rows[2]).toMatchObject({ eventId: null, raw: '"not an object"' });
  });

  it('rejects only the row the database refuses, with its reason, and stores the rest of the page', async () => {
    const { sourceId, cp } = await freshSource();
    const good = [event(), event()];
    // Normalisation rejects a NUL; this row skips it, as a value only PostgreSQL knows it refuses would.
    const bad = event({ name: 'has a NUL \u0000 inside' });
    const r = await persistPage(createDb(sql), input(sourceId, cp, [good[0]!, bad, good[1]!]));
    expect(r.inserted).toBe(2);
    expect(r.refused).toBe(1);
    expect(r.rejectsInserted).toBe(1);
    expect(r.duplicates).toBe(0);
    expect(r.writePath).toBe('insert');
    expect(await count('events', sourceId)).toBe(2);
    const [reject] = await sql<{ eventId: string; reason: string }[]>`
      select event_id as "eventId", reason from rejected_events where source_id = ${sourceId}`;
    expect(reject?.eventId).toBe(bad.id);
    expect(reject?.reason).toMatch(/^PostgreSQL refused the normalised row \(22P05: /);
    expect(r.checkpoint.pages).toBe(cp.pages + 1);
    expect(r.checkpoint.rejected).toBe(1);
  });

  it('records a conflicting duplicate within a page and across pages, once each, and keeps the first copy', async () => {
    const { sourceId, cp } = await freshSource();
    const a = event();
    const b = event();
    const aRenamed = { ...a, name: 'event_other' };
    const first = await persistPage(createDb(sql), input(sourceId, cp, [a, b, aRenamed]));
    expect(first.inserted).toBe(2);
    expect(first.duplicates).toBe(1);
    expect(first.conflicts).toBe(1);
    const bDayOff = { ...b, occurredAtMs: b.occurredAtMs - 86_400_000, properties: { page: '/other' } };
    const same = { ...a };
    const second = await persistPage(createDb(sql), input(sourceId, first.checkpoint, [bDayOff, same]));
    expect(second.inserted).toBe(0);
    expect(second.duplicates).toBe(2);
    expect(second.conflicts).toBe(1);
    expect(second.checkpoint.conflicts).toBe(2);
    const rows = await sql<{ eventId: string; fields: string }[]>`
      select event_id::text as "eventId", fields from event_conflicts where source_id = ${sourceId} order by id`;
    expect(rows).toEqual([
      { eventId: a.id, fields: 'name' },
      { eventId: b.id, fields: 'properties,timestamp' },
    ]);
    const [stored] = await sql<{ name: string }[]>`select name from events where id = ${a.id}`;
    expect(stored?.name).toBe(a.name);
    // The same conflicting copy again (a page served twice) is not counted twice.
    const third = await persistPage(createDb(sql), input(sourceId, second.checkpoint, [bDayOff]));
    expect(third.conflicts).toBe(0);
  });

  it('counts empty pages in a row in the checkpoint, resets the count on a page with rows, and clears last_error', async () => {
    const { sourceId, cp } = await freshSource();
    await sql`update checkpoints set last_error = 'UpstreamProtocolError: earlier' where source_id = ${sourceId}`;
    const empty = (c: Checkpoint) =>
      input(sourceId, c, [], {
        next: { ...input(sourceId, c, []).next, positionTs: T0, positionId: null, emptyPage: true },
      });
    const e1 = await persistPage(createDb(sql), empty(cp));
    expect(e1.checkpoint.emptyPagesInARow).toBe(1);
    expect(e1.checkpoint.lastError).toBeNull();
    const e2 = await persistPage(createDb(sql), empty(e1.checkpoint));
    expect(e2.checkpoint.emptyPagesInARow).toBe(2);
    const full = await persistPage(createDb(sql), input(sourceId, e2.checkpoint, [event()]));
    expect(full.checkpoint.emptyPagesInARow).toBe(0);
  });

  it('round-trips hostile strings, unicode, huge and deep properties and instants exactly', async () => {
    const { sourceId, cp } = await freshSource();
    let deep: unknown = { leaf: 'bottom' };
    for (let i = 0; i < 200; i++) deep = { level: i, child: deep };
    const hostile = [
      "'; drop table events; --",
      'quote " double, \' single, `back`',
      'back\\slash \\\\ and \\u0000 as text',
      '$1 $$ dollar $tag$ quoting',
      'tab\tnewline\ncr\r',
      'emoji 🚀 CJK 漢字 RTL مرحبا combining é',
      'x'.repeat(200_000),
    ];
    const events = hostile.map((s, i) =>
      event({
        type: s,
        name: s,
        deviceType: s,
        browser: i % 2 ? null : s,
        occurredAtMs: T0 + i,
        properties: {
          s,
          list: Array.from({ length: 2_000 }, (_, k) => ({ k, s: s.slice(0, 20) })),
          deep,
          nums: [0, -1, 1.5, 1e21, 123456789012345],
          nil: null,
          bool: false,
          [s.slice(0, 50)]: 'key',
        },
      }),
    );
    events.push(
      event({ properties: null }),
      event({ properties: ['array', 'top'] }),
      event({ properties: 'str' }),
    );
    const r = await persistPage(createDb(sql), input(sourceId, cp, events));
    expect(r.inserted).toBe(events.length);
    const rows = await sql<
      {
        id: string;
        type: string;
        name: string;
        deviceType: string | null;
        browser: string | null;
        properties: string | null;
        ms: number;
      }[]
    >`select id, type, name, device_type as "deviceType", browser, properties::text as properties,
        (extract(epoch from occurred_at) * 1000)::float8 as ms
      from events where source_id = ${sourceId}`;
    const byId = new Map(rows.map((row) => [row.id, row]));
    for (const e of events) {
      const row = byId.get(e.id);
      expect(row).toBeDefined();
      expect(row?.type).toBe(e.type);
      expect(row?.name).toBe(e.name);
      expect(row?.deviceType).toBe(e.deviceType);
      expect(row?.browser).toBe(e.browser);
      expect(row?.ms).toBe(e.occurredAtMs);
      expect(row?.properties ? JSON.parse(row.properties) : null).toEqual(e.properties ?? null);
    }
    // null properties are SQL NULL (not the jsonb value null), on the COPY path as on the INSERT path.
    expect(r.writePath).toBe('copy');
    const nullProps = events.find((e) => e.properties === null);
    expect(byId.get(nullProps?.id ?? '')?.properties).toBeNull();
  });

  it('keeps every millisecond instant exact through the epoch-ms conversion', async () => {
    const { sourceId, cp } = await freshSource();
    const instants = fc.sample(fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2100, 0, 1) - 1 }), {
      numRuns: 2_000,
      seed: 42,
    });
    const events = instants.map((ms) => event({ occurredAtMs: ms }));
    await persistPage(createDb(sql), input(sourceId, cp, events));
    const rows = await sql<{ id: string; ms: number }[]>`
      select id, (extract(epoch from occurred_at) * 1000)::float8 as ms from events where source_id = ${sourceId}`;
    const got = new Map(rows.map((row) => [row.id, row.ms]));
    const wrong = events.filter((e) => got.get(e.id) !== e.occurredAtMs);
    expect(wrong).toEqual([]);
  });
});

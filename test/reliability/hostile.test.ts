import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configDefaults } from '#shared/config.ts';
import { decodeCursor } from '#shared/cursor.ts';
import { listChains } from '#shared/db/chains.ts';
import { createDb, createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { createStore } from '#shared/db/store.ts';
import { AuthError, UpstreamProtocolError } from '#shared/errors.ts';
import { statusView } from '#shared/status/view.ts';
import type { StepDeps } from '#shared/step/index.ts';
import { createDataSyncClient, MAX_RESPONSE_BYTES } from '#shared/upstream/client.ts';
import { INVALID_UTF8_REASON } from '#shared/upstream/normalise.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import {
  cursorAt,
  type HostileResponse,
  type HostileServer,
  pageBody,
  startHostileServer,
} from '#test/support/hostile-server.ts';
import { realClock, storedInstants } from '#test/support/pipeline.ts';
import { verificationProblem } from '../../local/run/verification.ts';
import {
  type RunningSimulator,
  type SimulatorOptionsInput,
  startSimulator,
} from '../../local/simulator/index.ts';
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
    // SQL in the type is outside the documented enum: a reject, stored as text, never run.
    const typeInjection = event({ type: "page_view' or '1'='1" });
    const page1 = [sqlish, longName, deep, controls, unicode, typeInjection, nulInName, nulInProps];

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
      expect(await storedRow(typeInjection.id)).toBeNull();
      const reasons = await rejectReasons('hostile-values');
      expect(reasons).toHaveLength(4);
      expect(reasons[0]).toMatch(/^type: "page_view' or '1'='1" is not one of the documented types/);
      expect(reasons[1]).toMatch(
        /^name: contains U\+0000 or an unpaired surrogate, which PostgreSQL cannot store/,
      );
      expect(reasons[2]).toBe(
        'properties: contains U+0000 or an unpaired surrogate, which PostgreSQL jsonb cannot store',
      );
      expect(reasons[3]).toBe(INVALID_UTF8_REASON);

      const c = await sourceCounts(sql, 'hostile-values');
      const valid = page1.length - 3 + page2.length + final.length;
      expect(c.rows).toBe(valid);
      expect(c.checkpoint?.status).toBe('complete');
      expect(c.checkpoint?.eventsInserted).toBe(valid);
      expect(c.checkpoint?.rejected).toBe(4);
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

/*
 * The project's simulator misbehaving on purpose (its hostile fault options), through the real
 * step: each misbehaviour ends well, nothing is silently wrong, and a stopped source resumes once
 * the upstream behaves (a second simulator over the same data set without the fault).
 */
describe('a hostile simulator, through the real step', () => {
  const EVENTS = 20_000;
  type Logged = { level: string; message: string; fields?: Record<string, unknown> };

  function simDeps(sim: RunningSimulator, logs: Logged[] = []): StepDeps {
    const log = (level: string) => (message: string, fields?: Record<string, unknown>) =>
      logs.push({ level, message, ...(fields ? { fields } : {}) });
    return {
      store: createStore(sql),
      upstream: createDataSyncClient({ baseUrl: sim.url, apiKey: sim.options.apiKey, timeoutMs: 30_000 }),
      clock: realClock,
      logger: { info: log('info'), warn: log('warn'), error: log('error') },
      metrics: { add: () => {} },
      config: {
        ...configDefaults,
        pageSize: 5000,
        minSpacingMs: 0,
        retryBudgetMs: 5_000,
        maxInTaskSleepMs: 1_000,
        leaseTtlMs: 60_000,
        random: () => 0.01,
      },
    };
  }

  // Each scenario its own seed: events are keyed by id, and scenarios share one database.
  const SEEDS: Record<string, number> = {
    'hostile-values-sim': 21,
    'hostile-back': 22,
    'hostile-sideways': 23,
    'hostile-empty': 24,
    'hostile-conflicts': 25,
    'hostile-oversize': 26,
    'hostile-401': 27,
  };
  const sim = (sourceId: string, faults: SimulatorOptionsInput = {}) =>
    startSimulator({
      events: EVENTS,
      seed: SEEDS[sourceId],
      rateLimit: 0,
      latencyMs: 0,
      cacheTtlSeconds: 0,
      ...faults,
    });

  async function conflictRows(sourceId: string) {
    return sql<{ eventId: string; fields: string }[]>`
      select event_id::text as "eventId", fields from event_conflicts where source_id = ${sourceId} order by id`;
  }

  /** Runs the source to the end against a simulator that behaves: exact, and last_error gone. */
  async function resumeClean(sourceId: string): Promise<void> {
    const clean = await sim(sourceId);
    try {
      await driveToDone(simDeps(clean), { executionId: `${sourceId}-resume`, sourceId, maxSteps: 50 });
      const c = await sourceCounts(sql, sourceId);
      expect(c.rows).toBe(clean.dataset.expectedValidCount());
      expect(c.distinctIds).toBe(c.rows);
      expect(c.checkpoint?.status).toBe('complete');
      expect(c.checkpoint?.lastError).toBeNull();
    } finally {
      await clean.close();
    }
  }

  it('10,000-deep properties, 20-digit integers, 1e400, 1e-400 and hacked_type are rejects with their reasons; the rest is stored exactly', async () => {
    const s = await sim('hostile-values-sim', {
      deepPropertiesRate: 0.001,
      unexactNumberRate: 0.002,
      unknownTypeRate: 0.001,
    });
    try {
      await driveToDone(simDeps(s), {
        executionId: 'hostile-values-sim',
        sourceId: 'hostile-values-sim',
        maxSteps: 20,
      });
      const stats = s.stats().faults;
      expect(stats.deepProperties).toBeGreaterThan(0);
      expect(stats.unexactNumber).toBeGreaterThan(0);
      expect(stats.unknownType).toBeGreaterThan(0);
      const c = await sourceCounts(sql, 'hostile-values-sim');
      expect(c.checkpoint?.status).toBe('complete');
      expect(c.rows).toBe(s.dataset.expectedValidCount());
      expect(c.rejectedRows).toBe(s.dataset.rejectedIndices().length);
      expect(c.rejectedRows).toBe(stats.deepProperties + stats.unexactNumber + stats.unknownType);
      const rows = await sql<{ reason: string; raw: string }[]>`
        select reason, raw from rejected_events where source_id = 'hostile-values-sim'`;
      const by = (re: RegExp) => rows.filter((r) => re.test(r.reason));
      expect(by(/^properties: nested deeper than 1000 levels/)).toHaveLength(stats.deepProperties);
      expect(by(/^type: "hacked_type" is not one of the documented types/)).toHaveLength(stats.unknownType);
      const unexact = by(/^number (12345678901234567890|1e400|1e-400) cannot be read exactly/);
      expect(unexact).toHaveLength(stats.unexactNumber);
      // The raw text keeps the number as the upstream wrote it, not as JavaScript read it.
      for (const r of unexact) expect(r.raw).toMatch(/"n":(12345678901234567890|1e400|1e-400)\}/);
      report('hostile-sim-values', {
        runs: 1,
        faults: {
          deep10000: stats.deepProperties,
          unexact: stats.unexactNumber,
          hackedType: stats.unknownType,
        },
        expected: s.dataset.expectedValidCount(),
        stored: c.rows,
        duplicates: c.rows - c.distinctIds,
        rejects: c.rejectedRows,
      });
    } finally {
      await s.close();
    }
  });

  it.each([
    ['back', { backCursorRate: 1 }, 'points back'],
    ['sideways', { sidewaysCursorRate: 1 }, 'points sideways'],
  ] as const)(
    'a cursor pointing %s stops the source naming the positions, and it resumes once the upstream behaves',
    async (kind, faults, says) => {
      const sourceId = `hostile-${kind}`;
      const s = await sim(sourceId, faults);
      try {
        const error = await driveToDone(simDeps(s), { executionId: sourceId, sourceId, maxSteps: 20 }).catch(
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(UpstreamProtocolError);
        expect((error as Error).message).toContain(says);
        expect((error as Error).message).toMatch(
          /Request position \(ts=\d+ .*, id=[0-9a-f-]{36}\), the page's cursor \(ts=\d+/,
        );
        // Page one is stored; page two's cursor is the fault: two requests, no loop.
        expect(s.stats().pages).toBe(2);
        const c = await sourceCounts(sql, sourceId);
        expect(c.rows).toBe(5000);
        expect(c.checkpoint?.status).toBe('failed');
        expect(c.checkpoint?.lastError).toContain(says);
      } finally {
        await s.close();
      }
      await resumeClean(sourceId);
      report(`hostile-cursor-${kind}`, {
        runs: 2,
        faults: 1,
        expected: EVENTS,
        stored: EVENTS,
        duplicates: 0,
        rejects: 0,
      });
    },
  );

  it('empty pages with hasMore and a new cursor each time stop the source at the third; a resume keeps counting, then completes once the upstream behaves', async () => {
    const sourceId = 'hostile-empty';
    const s = await sim(sourceId, { emptyPageRate: 1 });
    try {
      const first = await driveToDone(simDeps(s), { executionId: sourceId, sourceId, maxSteps: 20 }).catch(
        (e: unknown) => e,
      );
      expect(first).toBeInstanceOf(UpstreamProtocolError);
      expect((first as Error).message).toContain('came with empty page number 3 in a row');
      expect(s.stats().faults.emptyPage).toBe(3);
      const c = await sourceCounts(sql, sourceId);
      expect(c.rows).toBe(5000);
      const [row] = await sql<{ n: number }[]>`
        select empty_pages_in_a_row as n from checkpoints where source_id = ${sourceId}`;
      expect(row?.n).toBe(2);
      // Started again while the upstream still misbehaves: one request, and it stops again.
      const again = await driveToDone(simDeps(s), {
        executionId: `${sourceId}-2`,
        sourceId,
        maxSteps: 20,
      }).catch((e: unknown) => e);
      expect(again).toBeInstanceOf(UpstreamProtocolError);
      expect(s.stats().faults.emptyPage).toBe(4);
    } finally {
      await s.close();
    }
    await resumeClean(sourceId);
    report('hostile-empty-pages', {
      runs: 3,
      faults: 4,
      expected: EVENTS,
      stored: EVENTS,
      duplicates: 0,
      rejects: 0,
    });
  });

  it('the same id with other content, across pages and within a page, is recorded and counted; the first copy stays', async () => {
    const sourceId = 'hostile-conflicts';
    const s = await sim(sourceId, { conflictingDuplicateRate: 1 });
    try {
      await driveToDone(simDeps(s), { executionId: sourceId, sourceId, maxSteps: 20 });
      const served = s.stats().faults.conflictingDuplicate;
      expect(served).toBe(6);
      const c = await sourceCounts(sql, sourceId);
      expect(c.checkpoint?.status).toBe('complete');
      expect(c.rows).toBe(s.dataset.expectedValidCount());
      const conflicts = await conflictRows(sourceId);
      expect(conflicts).toHaveLength(served);
      expect(conflicts.filter((r) => r.fields === 'name')).toHaveLength(served / 2);
      expect(conflicts.filter((r) => r.fields === 'timestamp')).toHaveLength(served / 2);
      // Every stored row is the first copy: the clean content of the data set.
      const instants = await storedInstants(sql, sourceId);
      for (const start of [4999, 5000, 9999, 10_000, 14_999, 15_000]) {
        const e = s.dataset.eventAt(start);
        expect(instants.get(e.id)).toBe(e.timestampMs);
      }
      const [renamed] = await sql<{ n: number }[]>`
        select count(*)::int as n from events where source_id = ${sourceId} and name = 'event_zzzzzz'`;
      expect(renamed?.n).toBe(0);
      // verified cannot be true while the upstream contradicted itself.
      const rows = await listChains(createDb(sql), sourceId);
      expect(rows[0]?.conflicts).toBe(served);
      const problem = verificationProblem(
        { events: c.rows, distinctIds: c.distinctIds, rejectedRows: c.rejectedRows },
        rows,
        s.dataset.expectedValidCount(),
      );
      expect(problem).toBe(
        '6 conflicting duplicates: event ids sent again with other content (the first copy is stored; each other copy and the fields that differ are in table event_conflicts)',
      );
      expect(statusView(rows, Date.now())?.conflicts).toBe(served);
      report('hostile-conflicts', {
        runs: 1,
        faults: served,
        expected: c.rows,
        stored: c.rows,
        duplicates: 0,
        rejects: 0,
        conflicts: served,
      });
    } finally {
      await s.close();
    }
  });

  it('an oversize page and a body that never ends are refused at the byte cap and retried; the run completes exact', async () => {
    const sourceId = 'hostile-oversize';
    // 40 MB: over the 27.7 MB cap, quick to refuse (its Content-Length says so) or to count.
    const s = await sim(sourceId, {
      oversizeBodyRate: 0.3,
      endlessBodyRate: 0.3,
      oversizeBodyBytes: 40 * 1024 * 1024,
      seed: 3,
    });
    const logs: Logged[] = [];
    try {
      await driveToDone(simDeps(s, logs), { executionId: sourceId, sourceId, maxSteps: 40 });
      const stats = s.stats().faults;
      expect(stats.oversizeBody).toBeGreaterThan(0);
      expect(stats.endlessBody).toBeGreaterThan(0);
      const refusals = logs
        .filter((l) => l.message === 'transient upstream fault, retrying')
        .map((l) => String(l.fields?.error));
      expect(
        refusals.some((m) =>
          m.includes(
            `its Content-Length says ${40 * 1024 * 1024} bytes, over the cap of ${MAX_RESPONSE_BYTES} bytes`,
          ),
        ),
      ).toBe(true);
      expect(
        refusals.some((m) => /more than \d+ bytes arrived \(no Content-Length\), over the cap/.test(m)),
      ).toBe(true);
      const c = await sourceCounts(sql, sourceId);
      expect(c.checkpoint?.status).toBe('complete');
      expect(c.rows).toBe(s.dataset.expectedValidCount());
      report('hostile-oversize-endless', {
        runs: 1,
        faults: { oversize40MB: stats.oversizeBody, endless: stats.endlessBody },
        expected: c.rows,
        stored: c.rows,
        duplicates: 0,
        rejects: 0,
      });
    } finally {
      await s.close();
    }
  });

  it('a 401 whose message holds a newline, ANSI colours and the key reaches last_error escaped and masked; a successful resume clears it', async () => {
    const sourceId = 'hostile-401';
    const s = await sim(sourceId, { hostileErrorRate: 1 });
    try {
      const error = await driveToDone(simDeps(s), { executionId: sourceId, sourceId, maxSteps: 5 }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(AuthError);
      const message = (error as Error).message;
      for (const text of [message, (await sourceCounts(sql, sourceId)).checkpoint?.lastError ?? '']) {
        const controls = [...text].filter(
          (ch) => ch.charCodeAt(0) < 0x20 || (ch >= '\u007f' && ch <= '\u009f'),
        );
        expect(controls).toEqual([]);
        expect(text).not.toContain(s.options.apiKey);
        expect(text).toContain("Invalid API key '***'\\u000a\\u001b[31mACCESS DENIED\\u001b[0m");
      }
    } finally {
      await s.close();
    }
    await resumeClean(sourceId);
    report('hostile-401-text', {
      runs: 2,
      faults: 1,
      expected: EVENTS,
      stored: EVENTS,
      duplicates: 0,
      rejects: 0,
    });
  });
});

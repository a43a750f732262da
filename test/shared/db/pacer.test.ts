import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { getPacerState, recordPacerAnswer, releasePacerSlot, reservePacerSlot } from '#shared/db/pacer.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

let testDb: TestDatabase;
let sql: Sql;
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
const OPTS = { minSpacingMs: 2200, maxAheadMs: 10 * 60_000, safetyMarginMs: 250 };

beforeAll(async () => {
  testDb = await createTestDatabase('dsi_pacer');
  sql = createSql(testDb.url, { max: 8 });
  await runMigrations(sql);
});
afterAll(async () => {
  await sql?.end({ timeout: 5 });
  await testDb.drop();
});

/** A key whose window is known and large: the spacing alone decides. */
async function openKey(key: string, limit = 1000): Promise<number> {
  const first = await reservePacerSlot(createDb(sql), { key, nowMs: T0, ...OPTS });
  await recordPacerAnswer(createDb(sql), {
    key,
    requestStartMs: first.startAtMs,
    reservedStartMs: first.startAtMs,
    answerAtMs: first.startAtMs + 3500,
    rateLimit: { limit, remaining: limit - 1, resetSeconds: 60 },
  });
  return first.startAtMs;
}

describe('reservePacerSlot', () => {
  it('creates the row on first use and keeps the reservation and what it learned', async () => {
    const slot = await reservePacerSlot(createDb(sql), { key: 'first', nowMs: T0, ...OPTS });
    expect(slot).toEqual({ startAtMs: T0, reserved: true, reason: 'free' });
    const [row] = await sql<{ next_at_ms: number; window_ms: number | null }[]>`
      select (extract(epoch from next_at) * 1000)::float8 as next_at_ms, window_ms from pacers where key = 'first'`;
    expect(row!.next_at_ms).toBe(T0 + 2200);
    expect(row!.window_ms).toBeNull();
    await recordPacerAnswer(createDb(sql), {
      key: 'first',
      requestStartMs: T0,
      answerAtMs: T0 + 3500,
      rateLimit: { limit: 10, remaining: 9, resetSeconds: 56.5 },
    });
    const [after] = await sql<{ window_ms: number }[]>`select window_ms from pacers where key = 'first'`;
    expect(after!.window_ms).toBe(60_000);
    // Another client (a restarted invocation) sees the same state.
    const other = createSql(testDb.url, { max: 1 });
    try {
      const state = await getPacerState(createDb(other), 'first');
      expect(state.starts).toEqual([{ at: T0, sent: T0, done: 'h' }]);
      expect(state.limit).toBe(10);
    } finally {
      await other.end({ timeout: 5 });
    }
  });

  it('works with the drizzle instance too (its json parser does not leak into the pacer)', async () => {
    const db = createDb(sql);
    await db.execute('select 1');
    const slot = await reservePacerSlot(db, { key: 'drizzle', nowMs: T0, ...OPTS });
    expect(slot.reserved).toBe(true);
    expect((await getPacerState(db, 'drizzle')).starts).toHaveLength(1);
  });

  it('many concurrent callers on one key never get two starts closer than the spacing', async () => {
    const first = await openKey('concurrent');
    const callers = 40;
    const slots = await Promise.all(
      Array.from({ length: callers }, (_, i) =>
        reservePacerSlot(createDb(sql), { key: 'concurrent', nowMs: T0 + 4000 + (i % 7), ...OPTS }),
      ),
    );
    expect(slots.every((s) => s.reserved)).toBe(true);
    const starts = [first, ...slots.map((s) => s.startAtMs)].sort((a, b) => a - b);
    expect(new Set(starts).size).toBe(callers + 1);
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(2200);
    const state = await getPacerState(createDb(sql), 'concurrent');
    expect(state.starts.map((s) => s.at)).toEqual(starts);
  });

  it('concurrent callers on a fresh key: exactly one goes out before the first answer', async () => {
    const slots = await Promise.all(
      Array.from({ length: 10 }, () => reservePacerSlot(createDb(sql), { key: 'fresh', nowMs: T0, ...OPTS })),
    );
    expect(slots.filter((s) => s.reserved)).toHaveLength(1);
    expect(slots.filter((s) => !s.reserved).every((s) => s.reason === 'first-answer')).toBe(true);
  });

  it('keys are independent', async () => {
    await openKey('a');
    const b = await reservePacerSlot(createDb(sql), { key: 'b', nowMs: T0, ...OPTS });
    expect(b).toMatchObject({ reserved: true, startAtMs: T0 });
  });
});

describe('recordPacerAnswer and releasePacerSlot', () => {
  it('a 429 blocks every chain until Retry-After has passed', async () => {
    await openKey('refused', 10);
    const slot = await reservePacerSlot(createDb(sql), { key: 'refused', nowMs: T0 + 5000, ...OPTS });
    await recordPacerAnswer(createDb(sql), {
      key: 'refused',
      requestStartMs: slot.startAtMs,
      answerAtMs: slot.startAtMs + 30,
      rateLimit: { limit: 10, remaining: 0, resetSeconds: 46 },
      retryAfterSeconds: 46,
    });
    const next = await reservePacerSlot(createDb(sql), {
      key: 'refused',
      nowMs: slot.startAtMs + 100,
      ...OPTS,
    });
    expect(next).toMatchObject({ reason: 'retry-after', startAtMs: slot.startAtMs + 30 + 46_000 + 250 });
  });

  it('a reservation that is too far away is not taken', async () => {
    await openKey('far', 10);
    await recordPacerAnswer(createDb(sql), {
      key: 'far',
      requestStartMs: T0 + 100,
      answerAtMs: T0 + 200,
      rateLimit: { limit: 10, remaining: 0, resetSeconds: 50 },
      retryAfterSeconds: 50,
    });
    const before = await getPacerState(createDb(sql), 'far');
    const slot = await reservePacerSlot(createDb(sql), {
      key: 'far',
      nowMs: T0 + 1000,
      ...OPTS,
      maxAheadMs: 5000,
    });
    expect(slot.reserved).toBe(false);
    expect(slot.startAtMs).toBe(T0 + 200 + 50_000 + 250);
    expect((await getPacerState(createDb(sql), 'far')).starts).toEqual(before.starts);
  });

  it('a released reservation leaves the log', async () => {
    await openKey('release');
    const slot = await reservePacerSlot(createDb(sql), { key: 'release', nowMs: T0 + 4000, ...OPTS });
    await releasePacerSlot(createDb(sql), { key: 'release', startAtMs: slot.startAtMs });
    const state = await getPacerState(createDb(sql), 'release');
    expect(state.starts.map((s) => s.at)).not.toContain(slot.startAtMs);
  });
});

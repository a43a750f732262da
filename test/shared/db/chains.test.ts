import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPlan,
  fallbackToOneChain,
  finishRange,
  listChains,
  renewSourceLease,
} from '#shared/db/chains.ts';
import { acquireLease, getCheckpoint, resetSource } from '#shared/db/checkpoints.ts';
import { createDb, createSql, type Db } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { persistPage } from '#shared/db/persist.ts';
import { CheckpointConflictError, LeaseHeldError } from '#shared/errors.ts';
import { chainKey, ZERO_ID } from '#shared/step/chains.ts';
import type { Checkpoint, PersistPageInput } from '#shared/step/contract.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { normalisedEvent } from '#test/support/events.ts';

let testDb: TestDatabase;
let sql: Sql;
let db: Db;
let seq = 0;

/** The newest instant of the data set; ranges are below it. */
const TOP = Date.UTC(2026, 0, 20, 12, 0, 0);
const OLDEST = TOP - 10_000_000;
const A = TOP - 3_000_000;
const B = TOP - 6_000_000;
const RANGES = [
  { chain: 0, hiTs: null, loTs: A },
  { chain: 1, hiTs: A, loTs: B },
  { chain: 2, hiTs: B, loTs: null },
];
const OWNER = 'exec-1';
const TTL = 600_000;
const NEVER = Number.MAX_SAFE_INTEGER;

beforeAll(async () => {
  testDb = await createTestDatabase('dsi_chains');
  sql = createSql(testDb.url, { max: 6 });
  await runMigrations(sql);
  db = createDb(sql);
  // Test-only witness: one row per transition of a checkpoint to complete.
  await sql.unsafe(`
    create table completions (source_id text not null);
    create function log_completion() returns trigger language plpgsql as $$
      begin insert into completions (source_id) values (new.source_id); return new; end $$;
    create trigger log_completion after update on checkpoints for each row
      when (old.status <> 'complete' and new.status = 'complete') execute function log_completion();`);
});
afterAll(async () => {
  await sql?.end({ timeout: 5 });
  await testDb.drop();
});

/** A source leased by OWNER, planned in three chains (RANGES), each chain row leased by OWNER. */
async function planned(): Promise<string> {
  const sourceId = `src-${++seq}`;
  await acquireLease(db, { sourceId, owner: OWNER, nowMs: Date.now(), ttlMs: TTL });
  await createPlan(db, {
    sourceId,
    owner: OWNER,
    mode: 'chains',
    note: null,
    oldestTs: OLDEST,
    ranges: RANGES,
  });
  for (const j of [1, 2]) {
    await acquireLease(db, { sourceId: chainKey(sourceId, j), owner: OWNER, nowMs: Date.now(), ttlMs: TTL });
  }
  return sourceId;
}

async function row(sourceId: string, chain: number): Promise<Checkpoint> {
  const cp = await getCheckpoint(db, chainKey(sourceId, chain));
  if (!cp) throw new Error(`no row for chain ${chain} of ${sourceId}`);
  return cp;
}

/** One page of one event at `ts` on a chain, as its step would persist it. */
async function page(
  sourceId: string,
  chain: number,
  ts: number,
  next: Partial<PersistPageInput['next']> = {},
  expectedVersion?: number,
) {
  const cp = await row(sourceId, chain);
  const event = normalisedEvent({ occurredAtMs: ts });
  return persistPage(createDb(sql), {
    sourceId: chainKey(sourceId, chain),
    eventsSourceId: sourceId,
    expectedVersion: expectedVersion ?? cp.version,
    owner: OWNER,
    events: [event],
    rejects: [],
    pageCursor: cp.cursor,
    next: {
      cursor: `c${chain}-${cp.pages + 1}`,
      positionTs: ts,
      positionId: event.id,
      hasMore: true,
      nextRequestAtMs: Date.now(),
      rateLimit: null,
      totalReported: null,
      ...next,
    },
    requestsMade: 1,
    rateLimitedSeen: 0,
  });
}

async function resumeOf(sourceId: string) {
  const [r] = await sql<{ cursor: string | null; ts: number | null; id: string | null }[]>`
    select resume_cursor as cursor, (extract(epoch from resume_position_ts) * 1000)::float8 as ts,
      resume_position_id as id
    from checkpoints where source_id = ${sourceId}`;
  return r;
}

async function completions(sourceId: string): Promise<number> {
  const [r] = await sql<
    { n: number }[]
  >`select count(*)::int as n from completions where source_id = ${sourceId}`;
  return r?.n ?? -1;
}

describe('createPlan', () => {
  it('records the plan on the source row and creates chain rows at the top of their ranges', async () => {
    const sourceId = `src-${++seq}`;
    const leased = await acquireLease(db, { sourceId, owner: OWNER, nowMs: Date.now(), ttlMs: TTL });
    const chains = await createPlan(db, {
      sourceId,
      owner: OWNER,
      mode: 'chains',
      note: 'latency 3.5 s > spacing 2.2 s',
      oldestTs: OLDEST,
      ranges: RANGES,
    });
    expect(chains.map((c) => [c.sourceId, c.chainOf, c.chain, c.rangeHiTs, c.rangeLoTs])).toEqual([
      [sourceId, null, 0, null, A],
      [`${sourceId}~1`, sourceId, 1, A, B],
      [`${sourceId}~2`, sourceId, 2, B, null],
    ]);
    expect(chains[0]).toMatchObject({
      chainMode: 'chains',
      chainNote: 'latency 3.5 s > spacing 2.2 s',
      chainsPlanned: 3,
      planOldestTs: OLDEST,
      rangeDone: false,
      leaseOwner: OWNER,
      version: leased.version,
    });
    for (const c of chains.slice(1)) {
      expect(c).toMatchObject({
        cursor: null,
        positionTs: c.rangeHiTs,
        positionId: ZERO_ID,
        status: 'running',
        rangeDone: false,
        leaseOwner: null,
        pages: 0,
      });
    }
    expect(await listChains(db, sourceId)).toEqual(chains);
  });

  it('is idempotent: a second plan changes nothing and returns the chains as they are', async () => {
    const sourceId = await planned();
    await page(sourceId, 1, A - 10);
    const before = await listChains(db, sourceId);
    const again = await createPlan(db, {
      sourceId,
      owner: OWNER,
      mode: 'chains',
      note: 'another plan',
      oldestTs: OLDEST - 1,
      ranges: [
        { chain: 0, hiTs: null, loTs: B },
        { chain: 1, hiTs: B, loTs: null },
      ],
    });
    expect(again).toEqual(before);
    expect(await listChains(db, sourceId)).toEqual(before);
  });

  it('refuses an owner that does not hold the source lease, and writes nothing', async () => {
    const sourceId = `src-${++seq}`;
    await acquireLease(db, { sourceId, owner: OWNER, nowMs: Date.now(), ttlMs: TTL });
    const error = await createPlan(db, {
      sourceId,
      owner: 'exec-2',
      mode: 'chains',
      note: null,
      oldestTs: OLDEST,
      ranges: RANGES,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseHeldError);
    expect((error as Error).message).toContain(OWNER);
    const chains = await listChains(db, sourceId);
    expect(chains).toHaveLength(1);
    expect(chains[0]?.chainMode).toBeNull();
  });

  it("with mode 'single' touches only the source row", async () => {
    const sourceId = `src-${++seq}`;
    await acquireLease(db, { sourceId, owner: OWNER, nowMs: Date.now(), ttlMs: TTL });
    const chains = await createPlan(db, {
      sourceId,
      owner: OWNER,
      mode: 'single',
      note: 'latency below the spacing',
      oldestTs: null,
      ranges: [{ chain: 0, hiTs: null, loTs: null }],
    });
    expect(chains).toHaveLength(1);
    expect(chains[0]).toMatchObject({ chainMode: 'single', chainsPlanned: 1, rangeLoTs: null });
  });

  it('refuses ranges that do not cover the data from page one to the end', async () => {
    const sourceId = `src-${++seq}`;
    await acquireLease(db, { sourceId, owner: OWNER, nowMs: Date.now(), ttlMs: TTL });
    const plan = { sourceId, owner: OWNER, mode: 'chains' as const, note: null, oldestTs: OLDEST };
    await expect(createPlan(db, { ...plan, ranges: [{ chain: 0, hiTs: TOP, loTs: null }] })).rejects.toThrow(
      /chain 0 starts on page one/,
    );
    await expect(createPlan(db, { ...plan, ranges: RANGES.slice(0, 2) })).rejects.toThrow(/last chain/);
    expect((await listChains(db, sourceId))[0]?.chainMode).toBeNull();
  });
});

describe('finishRange', () => {
  it('takes over the lower half of what is left of the largest open range (lo null: down to the plan oldest)', async () => {
    const sourceId = await planned();
    const p0 = TOP - 1_000_000; // chain 0 has A..p0 left: 2,000,000 ms
    const p2 = B - 1_000_000; // chain 2 has OLDEST..p2 left: 3,000,000 ms
    await page(sourceId, 0, p0);
    await page(sourceId, 2, p2);
    await page(sourceId, 1, B, { rangeDone: true });
    const before = await listChains(db, sourceId);

    const result = await finishRange(db, { sourceId, chain: 1, owner: OWNER, minSplitMs: 3_000_000 });

    const mid = OLDEST + 1_500_000;
    expect(result).toMatchObject({ takeover: { hiTs: mid, loTs: null }, sourceComplete: false });
    const [c0, c1, c2] = result.chains;
    expect(c2).toMatchObject({ rangeHiTs: B, rangeLoTs: mid, rangeDone: false, positionTs: p2 });
    expect(c2?.version).toBe(before[2]?.version);
    expect(c1).toMatchObject({
      rangeHiTs: mid,
      rangeLoTs: null,
      positionTs: mid,
      positionId: ZERO_ID,
      cursor: null,
      rangeDone: false,
      leaseOwner: OWNER,
      version: (before[1]?.version ?? 0) + 1,
    });
    expect(c0).toEqual(before[0]);
    expect(await listChains(db, sourceId)).toEqual(result.chains);
  });

  it("measures what is left from each chain's position (not read yet: the top of its range)", async () => {
    const sourceId = await planned();
    await page(sourceId, 0, A, { rangeDone: true });
    await page(sourceId, 2, B - 100);
    // Chain 1 has not read: A..B left (3,000,000 ms); chain 2 has B-100..OLDEST (3,999,900 ms).
    const result = await finishRange(db, { sourceId, chain: 0, owner: OWNER, minSplitMs: 1 });
    expect(result.takeover).toEqual({ hiTs: OLDEST + Math.floor((B - 100 - OLDEST) / 2), loTs: null });
    await page(sourceId, 2, B - 3_000_000);
    // Now chain 1 (A..B: 3,000,000) has the most left.
    await page(sourceId, 0, OLDEST + 100, { rangeDone: true });
    const second = await finishRange(db, { sourceId, chain: 0, owner: OWNER, minSplitMs: 1 });
    expect(second.takeover).toEqual({ hiTs: B + 1_500_000, loTs: B });
  });

  it('does not take over less than minSplitMs: the chain ends', async () => {
    const sourceId = await planned();
    await page(sourceId, 0, A + 1_000);
    await page(sourceId, 2, B - 1_000_000); // 3,000,000 ms left
    await page(sourceId, 1, B, { rangeDone: true });
    const result = await finishRange(db, { sourceId, chain: 1, owner: OWNER, minSplitMs: 3_000_001 });
    expect(result).toMatchObject({ takeover: null, sourceComplete: false });
    expect(result.chains[1]).toMatchObject({ rangeDone: true, rangeHiTs: A, rangeLoTs: B });
    expect(result.chains[2]).toMatchObject({ rangeDone: false, rangeLoTs: null });
  });

  it("does not bump the split chain's version: its page in flight still commits", async () => {
    const sourceId = await planned();
    await page(sourceId, 0, A, { rangeDone: true });
    await page(sourceId, 2, B - 1_000);
    await page(sourceId, 1, B, { rangeDone: true });
    // Chain 2 is between its fetch and its commit: it holds this version.
    const inFlight = (await row(sourceId, 2)).version;
    const result = await finishRange(db, { sourceId, chain: 1, owner: OWNER, minSplitMs: 1 });
    expect(result.takeover).not.toBeNull();
    const committed = await page(sourceId, 2, B - 2_000, {}, inFlight);
    expect(committed.version).toBe(inFlight + 1);
    // Its commit leaves the new low end alone.
    expect(committed.checkpoint.rangeLoTs).toBe(result.takeover?.hiTs);

    // The same while the page's transaction and the split truly overlap.
    await page(sourceId, 1, (result.takeover?.hiTs ?? 0) - 1, { rangeDone: true });
    const v = (await row(sourceId, 2)).version;
    const [split, commit] = await Promise.all([
      finishRange(db, { sourceId, chain: 1, owner: OWNER, minSplitMs: 1 }),
      page(sourceId, 2, B - 3_000, {}, v),
    ]);
    expect(split.takeover).not.toBeNull();
    expect(commit.version).toBe(v + 1);
  });

  it("keeps chain 0's contiguous position the first time it leaves its range, and only then", async () => {
    const sourceId = await planned();
    await page(sourceId, 0, TOP - 10, { cursor: 'c0-first' });
    const last = await page(sourceId, 0, A, { cursor: 'c0-last', rangeDone: true });
    await finishRange(db, { sourceId, chain: 0, owner: OWNER, minSplitMs: 1 });
    expect(await resumeOf(sourceId)).toEqual({ cursor: 'c0-last', ts: A, id: last.checkpoint.positionId });

    await page(sourceId, 0, (await row(sourceId, 0)).rangeLoTs ?? OLDEST, {
      cursor: 'c0-elsewhere',
      rangeDone: true,
    });
    const second = await finishRange(db, { sourceId, chain: 0, owner: OWNER, minSplitMs: 1 });
    expect(second.takeover).not.toBeNull();
    expect(await resumeOf(sourceId)).toEqual({ cursor: 'c0-last', ts: A, id: last.checkpoint.positionId });
  });

  it('completes the source only when every range is done, and releases every lease of it', async () => {
    const sourceId = await planned();
    await page(sourceId, 1, B, { rangeDone: true });
    const r1 = await finishRange(db, { sourceId, chain: 1, owner: OWNER, minSplitMs: NEVER });
    expect(r1.sourceComplete).toBe(false);
    await page(sourceId, 2, OLDEST, { hasMore: false });
    const r2 = await finishRange(db, { sourceId, chain: 2, owner: OWNER, minSplitMs: NEVER });
    expect(r2.sourceComplete).toBe(false);
    expect((await row(sourceId, 0)).status).toBe('running');
    await page(sourceId, 0, A, { rangeDone: true });
    const r0 = await finishRange(db, { sourceId, chain: 0, owner: OWNER, minSplitMs: NEVER });
    expect(r0).toMatchObject({ takeover: null, sourceComplete: true });
    expect(r0.chains[0]).toMatchObject({ status: 'complete', leaseOwner: null, leaseExpiresAtMs: null });
    expect(r0.chains[0]?.completedAtMs).not.toBeNull();
    for (const c of r0.chains) expect(c).toMatchObject({ rangeDone: true, leaseOwner: null });
    expect(await completions(sourceId)).toBe(1);
    // Asked again (a retried task), it says the source is complete and changes nothing.
    const again = await finishRange(db, { sourceId, chain: 1, owner: OWNER, minSplitMs: 1 });
    expect(again).toEqual({ takeover: null, sourceComplete: true, chains: r0.chains });
  });

  it('refuses a chain the owner does not hold, and a chain that moved on since expectedVersion', async () => {
    const sourceId = await planned();
    await expect(
      finishRange(db, { sourceId, chain: 1, owner: 'exec-2', minSplitMs: 1 }),
    ).rejects.toBeInstanceOf(LeaseHeldError);
    const v = (await row(sourceId, 1)).version;
    await finishRange(db, { sourceId, chain: 1, owner: OWNER, minSplitMs: 1, expectedVersion: v });
    // A repeat of that call must not end the range it just took over.
    await expect(
      finishRange(db, { sourceId, chain: 1, owner: OWNER, minSplitMs: 1, expectedVersion: v }),
    ).rejects.toBeInstanceOf(CheckpointConflictError);
    expect((await row(sourceId, 1)).rangeDone).toBe(false);
  });

  it.each([1, 2, 3, 4, 5])(
    'two chains finishing at the same time: exactly one completes the source, no deadlock (round %i)',
    async () => {
      // Both chains marked their range done in their last page, then finish concurrently.
      const sourceId = await planned();
      await page(sourceId, 2, OLDEST, { hasMore: false });
      await finishRange(db, { sourceId, chain: 2, owner: OWNER, minSplitMs: NEVER });
      await page(sourceId, 0, A, { rangeDone: true });
      await page(sourceId, 1, B, { rangeDone: true });
      const results = await Promise.all([
        finishRange(db, { sourceId, chain: 0, owner: OWNER, minSplitMs: 1 }),
        finishRange(db, { sourceId, chain: 1, owner: OWNER, minSplitMs: 1 }),
      ]);
      expect(results.map((r) => [r.takeover, r.sourceComplete])).toEqual([
        [null, true],
        [null, true],
      ]);
      expect(await completions(sourceId)).toBe(1);
      expect((await listChains(db, sourceId)).map((c) => c.leaseOwner)).toEqual([null, null, null]);

      // Neither marked yet: the first to commit ends (nothing left to take over), the second completes.
      const other = await planned();
      await page(other, 2, OLDEST, { hasMore: false });
      await finishRange(db, { sourceId: other, chain: 2, owner: OWNER, minSplitMs: NEVER });
      const raced = await Promise.all([
        finishRange(db, { sourceId: other, chain: 0, owner: OWNER, minSplitMs: NEVER }),
        finishRange(db, { sourceId: other, chain: 1, owner: OWNER, minSplitMs: NEVER }),
      ]);
      expect(raced.filter((r) => r.sourceComplete)).toHaveLength(1);
      expect(await completions(other)).toBe(1);
      expect((await row(other, 0)).status).toBe('complete');
    },
  );
});

describe('fallbackToOneChain', () => {
  it('closes the chain rows and reopens chain 0 at the resume point to the end of the data, once', async () => {
    const sourceId = await planned();
    const last = await page(sourceId, 0, A, { cursor: 'c0-last', rangeDone: true });
    const took = await finishRange(db, { sourceId, chain: 0, owner: OWNER, minSplitMs: 1 });
    expect(took.takeover).not.toBeNull();
    await page(sourceId, 0, (took.takeover?.hiTs ?? 0) - 5, { cursor: 'c0-in-chain-2s-range' });
    const before = await row(sourceId, 0);

    const chains = await fallbackToOneChain(db, {
      sourceId,
      owner: OWNER,
      reason: 'built cursor refused (400)',
    });

    expect(chains[0]).toMatchObject({
      chainMode: 'fallback',
      chainNote: 'built cursor refused (400)',
      rangeHiTs: null,
      rangeLoTs: null,
      rangeDone: false,
      status: 'running',
      cursor: 'c0-last',
      positionTs: A,
      positionId: last.checkpoint.positionId,
      leaseOwner: OWNER,
      version: before.version + 1,
    });
    expect(chains.slice(1).map((c) => c.rangeDone)).toEqual([true, true]);
    expect(await fallbackToOneChain(db, { sourceId, owner: OWNER, reason: 'again' })).toEqual(chains);

    // One chain now: its last page completes the source as before.
    const end = await page(sourceId, 0, OLDEST, { hasMore: false, cursor: null });
    expect(end.checkpoint).toMatchObject({ status: 'complete', leaseOwner: null });
  });

  it('reopens chain 0 at its own position when it never left its range', async () => {
    const sourceId = await planned();
    await page(sourceId, 0, TOP - 50, { cursor: 'c0-1' });
    const before = await row(sourceId, 0);
    const [c0] = await fallbackToOneChain(db, { sourceId, owner: OWNER, reason: 'rows outside the range' });
    expect(c0).toMatchObject({
      cursor: 'c0-1',
      positionTs: TOP - 50,
      positionId: before.positionId,
      rangeLoTs: null,
      chainMode: 'fallback',
    });
  });

  it('refuses an owner that does not hold the source lease', async () => {
    const sourceId = await planned();
    await expect(fallbackToOneChain(db, { sourceId, owner: 'exec-2', reason: 'x' })).rejects.toBeInstanceOf(
      LeaseHeldError,
    );
    expect((await row(sourceId, 0)).chainMode).toBe('chains');
  });
});

describe('renewSourceLease', () => {
  it('extends the lease without bumping the version; another owner gets LeaseHeld', async () => {
    const sourceId = await planned();
    const before = await row(sourceId, 0);
    const now = Date.now();
    const renewed = await renewSourceLease(db, { sourceId, owner: OWNER, nowMs: now + TTL, ttlMs: TTL });
    expect(renewed).toMatchObject({
      version: before.version,
      leaseOwner: OWNER,
      leaseExpiresAtMs: now + 2 * TTL,
    });
    // Never shortens it.
    const same = await renewSourceLease(db, { sourceId, owner: OWNER, nowMs: now, ttlMs: TTL });
    expect(same.leaseExpiresAtMs).toBe(now + 2 * TTL);

    const error = await renewSourceLease(db, { sourceId, owner: 'exec-2', nowMs: now, ttlMs: TTL }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(LeaseHeldError);
    expect((error as Error).message).toContain(OWNER);
    expect((await row(sourceId, 0)).leaseExpiresAtMs).toBe(now + 2 * TTL);
  });
});

describe('persistPage on chains', () => {
  it("stores a chain's events and rejects under the real source id and ends its range without completing", async () => {
    const sourceId = await planned();
    const cp = await row(sourceId, 1);
    const event = normalisedEvent({ occurredAtMs: B });
    const result = await persistPage(createDb(sql), {
      sourceId: chainKey(sourceId, 1),
      eventsSourceId: sourceId,
      expectedVersion: cp.version,
      owner: OWNER,
      events: [event],
      rejects: [{ reason: 'no id', raw: { name: 'x' } }],
      pageCursor: null,
      next: {
        cursor: 'c1-1',
        positionTs: B,
        positionId: event.id,
        hasMore: true,
        nextRequestAtMs: Date.now(),
        rateLimit: null,
        totalReported: null,
        rangeDone: true,
      },
      requestsMade: 1,
      rateLimitedSeen: 0,
    });
    expect(result.checkpoint).toMatchObject({
      rangeDone: true,
      status: 'running',
      leaseOwner: OWNER,
      pages: 1,
    });
    const [stored] = await sql<
      { source: string }[]
    >`select source_id as source from events where id = ${event.id}`;
    expect(stored?.source).toBe(sourceId);
    const rejects = await sql<{ source: string }[]>`
      select source_id as source from rejected_events where source_id in (${sourceId}, ${chainKey(sourceId, 1)})`;
    expect(rejects).toEqual([{ source: sourceId }]);
  });

  it('the end of the data on a chain row or on a planned source row ends that range only', async () => {
    const sourceId = await planned();
    const c2 = await page(sourceId, 2, OLDEST, { hasMore: false, cursor: null });
    expect(c2.checkpoint).toMatchObject({
      rangeDone: true,
      status: 'running',
      leaseOwner: OWNER,
      completedAtMs: null,
    });
    const c0 = await page(sourceId, 0, OLDEST, { hasMore: false, cursor: null });
    expect(c0.checkpoint).toMatchObject({
      rangeDone: true,
      status: 'running',
      leaseOwner: OWNER,
      completedAtMs: null,
    });
    // rangeDone false later does not reopen a range.
    const c1 = await page(sourceId, 1, A - 1);
    expect(c1.checkpoint.rangeDone).toBe(false);
    expect((await page(sourceId, 2, OLDEST, { hasMore: true })).checkpoint.rangeDone).toBe(true);
  });
});

describe('resetSource', () => {
  it("deletes the chain rows with the source's own row, and nothing of another source", async () => {
    const sourceId = await planned();
    const other = await planned();
    await page(sourceId, 1, A - 1);
    const result = await resetSource(db, sourceId);
    expect(result).toMatchObject({ events: 1, checkpoints: 3 });
    expect(await listChains(db, sourceId)).toEqual([]);
    expect(await listChains(db, other)).toHaveLength(3);
  });
});

import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  acquireLease,
  getCheckpoint,
  recordFailure,
  recordRateLimited,
  releaseLease,
  resetSource,
} from '#shared/db/checkpoints.ts';
import { createDb, createSql, type Db } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { persistPage } from '#shared/db/persist.ts';
import { CheckpointConflictError, LeaseHeldError } from '#shared/errors.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

let testDb: TestDatabase;
let sql: Sql;
let db: Db;
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
const TTL = 180_000;

beforeAll(async () => {
  testDb = await createTestDatabase('dsi_checkpoints');
  sql = createSql(testDb.url, { max: 4 });
  await runMigrations(sql);
  db = createDb(sql);
});
afterAll(async () => {
  await sql?.end({ timeout: 5 });
  await testDb.drop();
});

describe('acquireLease', () => {
  it('creates the checkpoint on first use, running at position zero, and takes the lease', async () => {
    const cp = await acquireLease(db, { sourceId: 'new', owner: 'exec-1', nowMs: T0, ttlMs: TTL });
    expect(cp).toMatchObject({
      sourceId: 'new',
      cursor: null,
      positionTs: null,
      status: 'running',
      pages: 0,
      eventsInserted: 0,
      leaseOwner: 'exec-1',
      leaseExpiresAtMs: T0 + TTL,
      version: 1,
    });
    expect(await getCheckpoint(db, 'new')).toEqual(cp);
  });

  it('renews for the same owner and bumps the version each time', async () => {
    const a = await acquireLease(db, { sourceId: 'renew', owner: 'exec-1', nowMs: T0, ttlMs: TTL });
    const b = await acquireLease(db, { sourceId: 'renew', owner: 'exec-1', nowMs: T0 + 5_000, ttlMs: TTL });
    expect(b.leaseExpiresAtMs).toBe(T0 + 5_000 + TTL);
    expect(b.version).toBe(a.version + 1);
  });

  it('refuses a different owner while the lease is live, naming the holder, the expiry and what to do', async () => {
    await acquireLease(db, { sourceId: 'held', owner: 'exec-1', nowMs: T0, ttlMs: TTL });
    const error = await acquireLease(db, {
      sourceId: 'held',
      owner: 'exec-2',
      nowMs: T0 + 1_000,
      ttlMs: TTL,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseHeldError);
    const message = (error as Error).message;
    expect(message).toContain('"held"');
    expect(message).toContain('exec-1');
    expect(message).toContain(new Date(T0 + TTL).toISOString());
    expect(message).toMatch(/wait/i);
    expect((await getCheckpoint(db, 'held'))?.leaseOwner).toBe('exec-1');
  });

  it('takes an expired lease', async () => {
    await acquireLease(db, { sourceId: 'expired', owner: 'exec-1', nowMs: T0, ttlMs: TTL });
    const cp = await acquireLease(db, { sourceId: 'expired', owner: 'exec-2', nowMs: T0 + TTL, ttlMs: TTL });
    expect(cp.leaseOwner).toBe('exec-2');
  });

  it('takes the lease over from the named parent execution', async () => {
    await acquireLease(db, { sourceId: 'handover', owner: 'parent', nowMs: T0, ttlMs: TTL });
    await expect(
      acquireLease(db, {
        sourceId: 'handover',
        owner: 'child',
        nowMs: T0,
        ttlMs: TTL,
        handoverFrom: 'someone-else',
      }),
    ).rejects.toThrow(LeaseHeldError);
    const cp = await acquireLease(db, {
      sourceId: 'handover',
      owner: 'child',
      nowMs: T0,
      ttlMs: TTL,
      handoverFrom: 'parent',
    });
    expect(cp.leaseOwner).toBe('child');
  });

  it('grants exactly one of many concurrent requests from different owners', async () => {
    const owners = ['a', 'b', 'c', 'd', 'e', 'f'];
    const results = await Promise.allSettled(
      owners.map((owner) => acquireLease(db, { sourceId: 'race', owner, nowMs: T0, ttlMs: TTL })),
    );
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(LeaseHeldError);
    const winner = (won[0] as PromiseFulfilledResult<{ leaseOwner: string }>).value.leaseOwner;
    expect((await getCheckpoint(db, 'race'))?.leaseOwner).toBe(winner);
  });

  it('a stale invocation of the same owner cannot commit after the lease was renewed', async () => {
    const first = await acquireLease(db, { sourceId: 'stale-same', owner: 'exec', nowMs: T0, ttlMs: TTL });
    await acquireLease(db, { sourceId: 'stale-same', owner: 'exec', nowMs: T0 + 1, ttlMs: TTL });
    await expect(
      recordRateLimited(db, {
        sourceId: 'stale-same',
        expectedVersion: first.version,
        nextRequestAtMs: T0,
        rateLimit: null,
      }),
    ).rejects.toThrow(CheckpointConflictError);
  });
});

describe('releaseLease / recordFailure / recordRateLimited', () => {
  it('release frees the source for the owner only', async () => {
    await acquireLease(db, { sourceId: 'rel', owner: 'exec-1', nowMs: T0, ttlMs: TTL });
    await releaseLease(db, { sourceId: 'rel', owner: 'exec-2' });
    expect((await getCheckpoint(db, 'rel'))?.leaseOwner).toBe('exec-1');
    await releaseLease(db, { sourceId: 'rel', owner: 'exec-1' });
    const cp = await getCheckpoint(db, 'rel');
    expect(cp?.leaseOwner).toBeNull();
    expect(cp?.leaseExpiresAtMs).toBeNull();
    expect(
      (await acquireLease(db, { sourceId: 'rel', owner: 'exec-3', nowMs: T0, ttlMs: TTL })).leaseOwner,
    ).toBe('exec-3');
  });

  it('recordFailure marks the source failed with the message; the next execution runs it again', async () => {
    await acquireLease(db, { sourceId: 'fail', owner: 'exec-1', nowMs: T0, ttlMs: TTL });
    await recordFailure(db, { sourceId: 'fail', error: 'CursorRejectedError: nope \u0000 here' });
    const failed = await getCheckpoint(db, 'fail');
    expect(failed?.status).toBe('failed');
    expect(failed?.lastError).toBe('CursorRejectedError: nope \\u0000 here');
    await releaseLease(db, { sourceId: 'fail', owner: 'exec-1' });
    const again = await acquireLease(db, { sourceId: 'fail', owner: 'exec-2', nowMs: T0, ttlMs: TTL });
    expect(again.status).toBe('running');
  });

  it('recordFailure keeps last_error on one line with control characters and ANSI codes visible', async () => {
    await recordFailure(db, {
      sourceId: 'fail-ansi',
      error: 'AuthError: bad\n\u001b[31mred\u001b[0m\u009b2J',
    });
    expect((await getCheckpoint(db, 'fail-ansi'))?.lastError).toBe(
      'AuthError: bad\\u000a\\u001b[31mred\\u001b[0m\\u009b2J',
    );
  });

  it('recordRateLimited counts the request and the 429 without advancing', async () => {
    const cp = await acquireLease(db, { sourceId: 'rl', owner: 'exec', nowMs: T0, ttlMs: TTL });
    const after = await recordRateLimited(db, {
      sourceId: 'rl',
      expectedVersion: cp.version,
      nextRequestAtMs: T0 + 61_500,
      rateLimit: { limit: 10, remaining: 0, resetSeconds: 61.5 },
      requestsMade: 2,
    });
    expect(after).toMatchObject({
      cursor: null,
      pages: 0,
      requests: 2,
      rateLimited: 1,
      nextRequestAtMs: T0 + 61_500,
      lastRateLimit: { limit: 10, remaining: 0, resetSeconds: 61.5 },
      version: cp.version + 1,
    });
    await expect(
      recordRateLimited(db, {
        sourceId: 'rl',
        expectedVersion: cp.version,
        nextRequestAtMs: T0,
        rateLimit: null,
      }),
    ).rejects.toThrow(CheckpointConflictError);
  });
});

describe('resetSource', () => {
  it("deletes the source's events, rejects and checkpoint, and nothing of other sources", async () => {
    for (const sourceId of ['reset-me', 'keep-me']) {
      const cp = await acquireLease(db, { sourceId, owner: 'exec', nowMs: T0, ttlMs: TTL });
      await persistPage(createDb(sql), {
        sourceId,
        expectedVersion: cp.version,
        owner: 'exec',
        events: [
          {
            id:
              sourceId === 'reset-me'
                ? '10000000-0000-4000-8000-000000000001'
                : '10000000-0000-4000-8000-000000000002',
            sessionId: '10000000-0000-4000-8000-00000000000a',
            userId: '10000000-0000-4000-8000-00000000000b',
            type: 'click',
            name: 'x',
            properties: {},
            occurredAtMs: T0,
            deviceType: null,
            browser: null,
          },
        ],
        rejects: [{ raw: { id: 'bad', src: sourceId }, reason: 'timestamp: missing' }],
        pageCursor: null,
        next: {
          cursor: null,
          positionTs: null,
          positionId: null,
          hasMore: false,
          nextRequestAtMs: T0,
          rateLimit: null,
          totalReported: null,
        },
        requestsMade: 1,
        rateLimitedSeen: 0,
      });
    }
    expect(await resetSource(db, 'reset-me')).toEqual({ events: 1, rejected: 1, checkpoints: 1 });
    expect(await getCheckpoint(db, 'reset-me')).toBeNull();
    const counts = await sql<{ source: string; events: number; rejects: number }[]>`
      select s as source,
        (select count(*)::int from events where source_id = s) as events,
        (select count(*)::int from rejected_events where source_id = s) as rejects
      from unnest(array['reset-me', 'keep-me']) as s order by 1`;
    expect(counts).toEqual([
      { source: 'keep-me', events: 1, rejects: 1 },
      { source: 'reset-me', events: 0, rejects: 0 },
    ]);
    expect((await getCheckpoint(db, 'keep-me'))?.status).toBe('complete');
  });
});

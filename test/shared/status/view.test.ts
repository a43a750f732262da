import { describe, expect, it } from 'vitest';
import { createStatusHandler } from '#functions/status/handler.ts';
import { statusResponseSchema, statusView } from '#shared/status/view.ts';
import { DAY, OWNER, row, T0, threeChains } from '#test/support/chains.ts';

describe('the status view of a source read by several chains', () => {
  it('sums the conflicting duplicates of every chain (a source without any says 0)', () => {
    const rows = threeChains();
    expect(statusView(rows, T0)?.conflicts).toBe(0);
    rows[0]!.conflicts = 2;
    rows[2]!.conflicts = 3;
    expect(statusView(rows, T0)?.conflicts).toBe(5);
  });

  it('sums the counters over the chains and lists each chain with its range, position and lease', () => {
    const view = statusView(threeChains(), T0);
    expect(view).toMatchObject({
      sourceId: 'default',
      eventsInserted: 1_299_998,
      pages: 260,
      rejected: 4,
      requests: 263,
      rateLimited: 1,
      totalReported: 3_000_000,
      status: 'running',
      mode: 'chains',
      note: '3 chains: the first page took 3500 ms, one request may start every 2200 ms',
      leaseOwner: OWNER,
      // The newest row's update and headers (chain 1's), the soonest request of a chain still reading.
      updatedAtMs: T0 - 1000,
      lastRateLimit: { limit: 10, remaining: 3, resetSeconds: 11 },
      nextRequestAtMs: T0 + 1100,
    });
    expect(view?.chains).toEqual([
      {
        chain: 0,
        hi: null,
        lo: T0 - 10 * DAY,
        position: T0 - 4 * DAY,
        pages: 120,
        inserted: 600_000,
        rangeDone: false,
        leased: true,
      },
      {
        chain: 1,
        hi: T0 - 10 * DAY,
        lo: T0 - 20 * DAY,
        position: T0 - 14 * DAY,
        pages: 98,
        inserted: 489_998,
        rangeDone: false,
        leased: true,
      },
      {
        chain: 2,
        hi: T0 - 20 * DAY,
        lo: null,
        position: T0 - 31 * DAY,
        pages: 42,
        inserted: 210_000,
        rangeDone: true,
        leased: false,
      },
    ]);
    // What the function returns is what the CLI accepts.
    expect(statusResponseSchema.parse({ checkpoint: view }).checkpoint).toEqual(view);
  });

  it('does not count an expired lease as held', () => {
    const view = statusView(threeChains(), T0 + 120_000);
    expect(view?.chains?.map((c) => c.leased)).toEqual([false, false, false]);
  });

  it('gives the fallback and its reason', () => {
    const rows = threeChains().map((r) => ({ ...r, rangeDone: r.chain > 0 }));
    rows[0] = {
      ...rows[0]!,
      chainMode: 'fallback',
      chainNote: 'the upstream refused a built cursor (400): one chain from the last contiguous position',
      rangeLoTs: null,
    };
    const view = statusView(rows, T0);
    expect(view?.mode).toBe('fallback');
    expect(view?.note).toMatch(/refused a built cursor/);
    // The counts of the chains that ran before the fallback stay in the totals.
    expect(view?.eventsInserted).toBe(1_299_998);
    expect(view?.chains?.map((c) => c.rangeDone)).toEqual([false, true, true]);
  });

  it('is the row itself for a source read by one chain, and null for an unknown source', () => {
    const one = row({
      pages: 7,
      eventsInserted: 35_000,
      chainMode: 'single',
      chainNote: 'one chain: fast upstream',
    });
    expect(statusView([one], T0)).toMatchObject({
      eventsInserted: 35_000,
      pages: 7,
      mode: 'single',
      note: 'one chain: fast upstream',
      chains: [{ chain: 0, pages: 7, inserted: 35_000, rangeDone: false, leased: false }],
    });
    expect(statusView([], T0)).toBeNull();
  });

  it('says the high-water mark, the last top-up and its new rows, and the late rows of every chain', () => {
    const marks = {
      hwmTs: T0 - DAY,
      hwmId: 'e',
      signpostTs: null,
      signpostId: null,
      floorTs: null,
      topupStartedAtMs: T0 - 60_000,
      baseInserted: 30_000,
      lastTopupAtMs: T0 - 30_000,
      lastTopupInserted: 5_012,
      topups: 3,
      lateBeyondLookback: 4,
    };
    const [head, ...rest] = threeChains();
    const rows = [
      { ...head!, status: 'complete' as const, marks },
      ...rest.map((r) => ({ ...r, marks: { ...marks, lateBeyondLookback: 1 } })),
    ];
    expect(statusView(rows, T0)?.topUp).toEqual({
      highWaterMark: T0 - DAY,
      signpost: null,
      floor: null,
      lastTopUpAtMs: T0 - 30_000,
      lastTopUpInserted: 5_012,
      topUps: 3,
      lateBeyondLookback: 4 + rest.length,
    });
    // A checkpoint from before top-ups (no marks) reads as none yet.
    expect(statusView([row({ chain: 0 })], T0)?.topUp).toMatchObject({ highWaterMark: null, topUps: 0 });
  });

  it('is what the status function answers for the rows it reads', async () => {
    const asked: string[] = [];
    const handler = createStatusHandler({
      // postgres.js connects on the first query, which the injected reader never sends.
      env: { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' },
      readRows: async (_sql, sourceId) => {
        asked.push(sourceId);
        return sourceId === 'default' ? threeChains() : [];
      },
      now: () => T0,
    });
    try {
      const out = statusResponseSchema.parse(await handler({ sourceId: 'default' }));
      expect(out.checkpoint).toEqual(statusView(threeChains(), T0));
      expect(await handler({ sourceId: 'other' })).toEqual({ checkpoint: null });
      expect(asked).toEqual(['default', 'other']);
    } finally {
      await handler.close();
    }
  });
});

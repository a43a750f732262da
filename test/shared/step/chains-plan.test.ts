import { describe, expect, it } from 'vitest';
import { chainsWanted, planRanges } from '#shared/step/chains.ts';

describe('chainsWanted', () => {
  const rl20 = { limit: 10, remaining: 9, resetSeconds: 20 };
  it('one chain when the latency is within the spacing', () => {
    expect(
      chainsWanted({ requested: 'auto', latencyMs: 1500, minSpacingMs: 2200, rateLimit: rl20 }).chains,
    ).toBe(1);
    expect(
      chainsWanted({ requested: 'auto', latencyMs: 0, minSpacingMs: 2200, rateLimit: null }).chains,
    ).toBe(1);
  });
  it('ceil(latency / interval) + 1 chains at the live latency, the interval being the tighter of spacing and window / limit', () => {
    expect(
      chainsWanted({ requested: 'auto', latencyMs: 3500, minSpacingMs: 2200, rateLimit: rl20 }).chains,
    ).toBe(3);
    const rl30 = { limit: 10, remaining: 9, resetSeconds: 30 };
    expect(
      chainsWanted({ requested: 'auto', latencyMs: 3500, minSpacingMs: 2200, rateLimit: rl30 }).chains,
    ).toBe(3);
    const rl60 = { limit: 10, remaining: 9, resetSeconds: 60 };
    expect(
      chainsWanted({ requested: 'auto', latencyMs: 3500, minSpacingMs: 2200, rateLimit: rl60 }).chains,
    ).toBe(2);
  });
  it('never more than the window holds requests', () => {
    const rl = { limit: 4, remaining: 3, resetSeconds: 20 };
    expect(
      chainsWanted({ requested: 'auto', latencyMs: 60_000, minSpacingMs: 2200, rateLimit: rl }).chains,
    ).toBe(4);
    expect(chainsWanted({ requested: 8, latencyMs: 0, minSpacingMs: 2200, rateLimit: rl }).chains).toBe(4);
    expect(chainsWanted({ requested: 3, latencyMs: 0, minSpacingMs: 2200, rateLimit: rl20 }).chains).toBe(3);
  });
});

describe('planRanges', () => {
  const first = { newestTs: 1_000_000, oldestOnPageTs: 990_000, events: 5000, total: 50_000, hasMore: true };
  it('splits the extrapolated span into equal ranges that meet exactly', () => {
    const plan = planRanges(first, 4);
    expect(plan?.oldestTs).toBe(900_000);
    expect(plan?.ranges).toEqual([
      { chain: 0, hiTs: null, loTs: 975_000 },
      { chain: 1, hiTs: 975_000, loTs: 950_000 },
      { chain: 2, hiTs: 950_000, loTs: 925_000 },
      { chain: 3, hiTs: 925_000, loTs: null },
    ]);
  });
  it('is null when there is nothing to split', () => {
    expect(planRanges(first, 1)).toBeNull();
    expect(planRanges({ ...first, hasMore: false }, 3)).toBeNull();
    expect(planRanges({ ...first, total: null }, 3)).toBeNull();
    expect(planRanges({ ...first, oldestOnPageTs: first.newestTs }, 3)).toBeNull();
  });
  it('keeps no boundary inside the first page', () => {
    // 2 pages in all: a 4-way split would put boundaries inside page one.
    const plan = planRanges({ ...first, total: 10_000 }, 4);
    expect(plan?.ranges.every((r) => r.hiTs === null || r.hiTs < first.oldestOnPageTs)).toBe(true);
  });
});

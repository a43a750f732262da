import { describe, expect, it } from 'vitest';
import {
  createProgressReporter,
  describeChains,
  describeProgress,
  progressFromRows,
} from '#local/run/progress.ts';
import { threeChains } from '#test/support/chains.ts';

const snapshot = {
  stored: 1_299_998,
  total: 3_000_000,
  pages: 260,
  rejected: 4,
  rateLimited: 1,
  storedThisRun: 1_299_998,
  elapsedMs: 600_000,
};

const chain = (n: number, pages: number, rangeDone = false) => ({
  chain: n,
  pages,
  inserted: pages * 5000,
  rangeDone,
});

describe('the progress line with cursor chains', () => {
  it('shows each chain in the bar and in the periodic line', () => {
    const p = {
      ...snapshot,
      chains: [chain(0, 120), chain(1, 98), chain(2, 42, true)],
      mode: 'chains' as const,
    };
    const d = describeProgress(p);
    expect(d.line).toContain('260 pages, chains 3 (0: 120 p, 1: 98 p, 2: done), ');
    expect(d.bar).toContain('chains 3 (0: 120 p, 1: 98 p, 2: done)');
    const written: string[] = [];
    const lines = createProgressReporter({ mode: 'lines', write: (t) => written.push(t) });
    lines.update(p, 10_000);
    expect(written.join('')).toContain('chains 3 (0: 120 p, 1: 98 p, 2: done)');
  });

  it('summarises past four chains, keeping the line short', () => {
    const eight = [0, 1, 2, 3, 4, 5, 6, 7].map((n) => chain(n, 98 + n * 5, n >= 5));
    expect(describeChains(eight, 'chains')).toBe('chains 8 (5 open: 98-118 p, 3 done)');
    expect(describeChains(eight.slice(0, 4), 'chains')).toBe(
      'chains 4 (0: 98 p, 1: 103 p, 2: 108 p, 3: 113 p)',
    );
    expect(
      describeChains(
        eight.map((c) => ({ ...c, rangeDone: true })),
        'chains',
      ),
    ).toBe('chains 8 (all done)');
    expect(describeChains([chain(0, 7), ...eight.slice(1, 5).map((c) => ({ ...c, pages: 7 }))])).toBe(
      'chains 5 (5 open: 7 p)',
    );
    const line = describeProgress({ ...snapshot, chains: [...eight, ...eight] }).line;
    expect(line).toContain('chains 16 (10 open: 98-118 p, 6 done)');
  });

  it('says when the source fell back to one chain, and nothing more for one chain or none', () => {
    expect(describeChains([chain(0, 300), chain(1, 10, true), chain(2, 4, true)], 'fallback')).toBe(
      'fallback to 1 chain',
    );
    expect(describeChains([chain(0, 300)], 'single')).toBeNull();
    expect(describeChains(undefined)).toBeNull();
    // Without chains the line is what it always was.
    expect(describeProgress(snapshot).line).toContain('260 pages, 2,167 ev/s');
  });

  it("takes the counters and the chains from the source's rows, summed", () => {
    expect(progressFromRows(threeChains())).toEqual({
      stored: 1_299_998,
      pages: 260,
      rejected: 4,
      rateLimited: 1,
      chains: [
        { chain: 0, pages: 120, inserted: 600_000, rangeDone: false },
        { chain: 1, pages: 98, inserted: 489_998, rangeDone: false },
        { chain: 2, pages: 42, inserted: 210_000, rangeDone: true },
      ],
      mode: 'chains',
    });
    expect(progressFromRows([])).toMatchObject({ stored: 0, chains: [], mode: null });
  });
});

import { describe, expect, it } from 'vitest';
import { describeProgress } from '#local/run/progress.ts';

const snapshot = {
  stored: 25_000,
  total: 3_000_000,
  pages: 5,
  rejected: 0,
  rateLimited: 0,
  storedThisRun: 25_000,
};

describe('the progress line', () => {
  it('takes the first ETA from the pacing plan, not from the cold rate of the first seconds', () => {
    // 19 s in, start-up included, the measured rate says 37 minutes; the plan says 2,273 ev/s.
    const early = describeProgress({ ...snapshot, elapsedMs: 19_000, plannedRate: 5000 / 2.2 });
    expect(early.line).toContain('ETA 21:49');
    const cold = describeProgress({ ...snapshot, elapsedMs: 19_000 });
    expect(cold.line).toContain('ETA 37:41');
  });

  it('switches to the measured rate once the run has a minute of its own', () => {
    const later = describeProgress({
      ...snapshot,
      stored: 150_000,
      storedThisRun: 150_000,
      elapsedMs: 75_000,
      plannedRate: 5000 / 2.2,
    });
    // 2,000 ev/s measured: 2,850,000 left take 23:45.
    expect(later.line).toContain('ETA 23:45');
  });
});

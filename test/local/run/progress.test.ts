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

  it('switches to the measured rate as soon as this run has measured progress', () => {
    // 4 s after the first page was seen, 22,000 more events: 5,500 ev/s, whatever the plan says.
    const measured = describeProgress({
      ...snapshot,
      stored: 47_000,
      storedThisRun: 47_000,
      elapsedMs: 20_000,
      plannedRate: 5000 / 2.2,
      sinceFirstPage: { ms: 4000, stored: 22_000 },
    });
    // 2,953,000 left at 5,500 ev/s: 08:57.
    expect(measured.line).toContain('ETA 08:57');
    expect(measured.line).toContain('5,500 ev/s');
  });

  it('keeps the plan while the measurement spans less than a few pages', () => {
    const early = describeProgress({
      ...snapshot,
      elapsedMs: 19_000,
      plannedRate: 5000 / 2.2,
      sinceFirstPage: { ms: 500, stored: 10_000 },
    });
    expect(early.line).toContain('ETA 21:49');
  });
});

import { describe, expect, it } from 'vitest';
import { type FamilyCase, QUIET_FAMILY_CASE, runFamilyCase } from '#bench/pacer-family.ts';
import {
  applyAnswer,
  decideReservation,
  emptyPacerState,
  windowEstimateMs,
} from '#shared/pacing/shared-pacer.ts';

/*
 * An answer the server held alone (Remaining = limit - 1) says every counted request before it
 * had left: a window ended between the latest of them and this one. Those intervals are
 * disjoint and windows do not overlap, so k such answers later at least k windows have passed:
 * W <= (at_k - after_0) / k. A window on the clock whose Reset names the oldest counted
 * request's expiry (later than its roll) gives the probe nothing to conclude, and its answers
 * name instants a latency and a unit late; the rolls still come every W.
 */

const clock: FamilyCase = {
  ...QUIET_FAMILY_CASE,
  requests: 200,
  mode: 'fixed',
  align: 'clock',
  resetBasis: 'oldest-counted',
  live: true,
};

describe('the bound that answers held alone put on the window', () => {
  for (const windowMs of [20_000, 30_000])
    for (const seed of [1, 2, 3])
      it(`a ${windowMs / 1000} s window on the clock, Reset from the oldest counted, with latency (seed ${seed}): W to within 500 ms, never under`, async () => {
        const run = await runFamilyCase({ ...clock, windowMs, seed });
        expect(run.rateLimited).toBe(0);
        // Without the bound: about W + 4.8 s (the latency and the unit counted from the answer).
        expect(run.windowEstimateMs).toBeGreaterThanOrEqual(windowMs);
        expect(run.windowEstimateMs).toBeLessThan(windowMs + 500);
      });

  it('takes the least of (at_k - after_j) / (k - j) over the answers held alone', () => {
    const T0 = 1_000_000;
    const opts = { minSpacingMs: 2200, maxAheadMs: 120_000, safetyMarginMs: 250 };
    let s = emptyPacerState();
    // Requests at these starts, answered at once: alone (Remaining 9) at 0, 31.2 s and 62.7 s,
    // counted with others between. Reset 40 s each: the answers alone name a 40 s window.
    const plan: [number, number][] = [
      [0, 9],
      [2_200, 8],
      [29_000, 7],
      [31_200, 9],
      [33_400, 8],
      [60_500, 7],
      [62_700, 9],
    ];
    for (const [at, remaining] of plan) {
      const d = decideReservation(s, { nowMs: T0 + at, ...opts });
      s = applyAnswer(d.state, {
        requestStartMs: d.startAtMs,
        reservedStartMs: d.startAtMs,
        answerAtMs: d.startAtMs,
        rateLimit: { limit: 10, remaining, resetSeconds: 40 },
      });
    }
    expect(s.alone?.map((a) => a.at - T0)).toEqual([31_200, 62_700]);
    // (62.7 - 29) / 1 = 33.7 s, where the answers held alone name 40 s.
    expect(windowEstimateMs(s)).toBe(33_700);
  });
});

import { describe, expect, it } from 'vitest';
import { rejectedBackoffMs, roundingPadMs } from '#shared/pacing/backoff.ts';
import { applyAnswer, decideReservation, emptyPacerState } from '#shared/pacing/shared-pacer.ts';

describe('backoff after 429s in a row', () => {
  it('doubles from 2 s with equal jitter and reaches a full 60 s window by the 7th, capped at 120 s', () => {
    expect(rejectedBackoffMs(1, 0)).toBe(1000);
    expect(rejectedBackoffMs(1, 0.999)).toBeLessThanOrEqual(2000);
    expect(rejectedBackoffMs(3, 0)).toBe(4000);
    for (const u of [0, 0.5, 0.999]) {
      expect(rejectedBackoffMs(7, u)).toBeGreaterThanOrEqual(60_000);
      expect(rejectedBackoffMs(50, u)).toBeLessThanOrEqual(120_000);
    }
  });

  it('the shared pacer blocks longer with each 429 in a row, and an answer resets the count', () => {
    let s = emptyPacerState();
    const base = { minSpacingMs: 2200, maxAheadMs: 1e9, safetyMarginMs: 250 };
    let t = 1_000_000;
    const refuse = () => {
      const d = decideReservation(s, { ...base, nowMs: t });
      s = applyAnswer(d.state, {
        requestStartMs: d.startAtMs,
        reservedStartMs: d.startAtMs,
        answerAtMs: d.startAtMs + 5,
        rateLimit: { limit: 10, remaining: 0, resetSeconds: 1 },
        retryAfterSeconds: 1,
        jitter: 0,
      });
      const waited = s.blockedUntilMs! - (d.startAtMs + 5);
      t = s.blockedUntilMs! + 300;
      return waited;
    };
    const waits = [1, 2, 3, 4, 5, 6, 7].map(refuse);
    expect(s.rejectedInARow).toBe(7);
    for (let i = 2; i < waits.length; i++) expect(waits[i]!).toBeGreaterThan(waits[i - 1]!);
    expect(waits.at(-1)).toBeGreaterThanOrEqual(60_000);
    const d = decideReservation(s, { ...base, nowMs: t });
    s = applyAnswer(d.state, {
      requestStartMs: d.startAtMs,
      reservedStartMs: d.startAtMs,
      answerAtMs: d.startAtMs + 5,
      rateLimit: { limit: 10, remaining: 9, resetSeconds: 20 },
    });
    expect(s.rejectedInARow).toBe(0);
  });
});

describe('rounding pad', () => {
  it('a whole number of units may be a unit early; a fraction was not rounded', () => {
    expect(roundingPadMs(20_000, 1000)).toBe(1000);
    expect(roundingPadMs(0, 1000)).toBe(1000);
    expect(roundingPadMs(19_734, 1000)).toBe(0);
    expect(roundingPadMs(20_000, 0)).toBe(0);
  });
});

describe('backoff cap', () => {
  it('grows to twice the longest window the upstream may have, and no further', () => {
    // The notes' 60 s: up to 120 s, so from some 429 in a row on every wait is a full window.
    expect(rejectedBackoffMs(30, 0.999)).toBeLessThanOrEqual(120_000);
    expect(rejectedBackoffMs(30, 0)).toBeGreaterThanOrEqual(60_000);
    // An upstream known to have 1 s windows (or a time-scaled run): up to 2 s, at least 1 s.
    for (let k = 1; k <= 30; k++) {
      expect(rejectedBackoffMs(k, 0.999, 1000)).toBeLessThanOrEqual(2000);
      expect(rejectedBackoffMs(k, 0, 1000)).toBeGreaterThanOrEqual(1000);
    }
  });
});

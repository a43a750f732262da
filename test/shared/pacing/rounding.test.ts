import { describe, expect, it } from 'vitest';
import { type FamilyCase, QUIET_FAMILY_CASE, runFamilyCase } from '#bench/pacer-family.ts';

/*
 * Whole-second Reset values may be rounded up or down (the API notes do not say). Without
 * knowing which, every whole-second value may be a second early: a pad of one second on the
 * window and on every named instant, 3 % of a 30 s window. The shared pacer learns the
 * direction with the window's last slot, sent between the latest instant the window's answers
 * named if Reset rounds up and the earliest if it rounds down: a slot found free there rules
 * out rounding down. The slot is one the window still had, so the test itself is never refused.
 */

const base: FamilyCase = { ...QUIET_FAMILY_CASE, requests: 80, windowMs: 30_000, seed: 5 };

describe('learning which way Reset is rounded', () => {
  for (const live of [false, true])
    for (const seed of [1, 2, 3])
      it(`a fixed window rounded up (${live ? 'live' : 'no'} latency, seed ${seed}): 'up', and the window without a pad`, async () => {
        const run = await runFamilyCase({ ...base, live, seed });
        expect(run.rateLimited).toBe(0);
        expect(run.pacer.rounding).toBe('up');
        expect(run.windowEstimateMs).toBeLessThan(30_000 + 500);
      });

  for (const mode of ['fixed', 'sliding'] as const)
    for (const align of ['first-request', 'clock'] as const)
      for (const live of [false, true])
        for (const seed of [1, 2])
          it(`a ${mode} window (${align}) rounded down (${live ? 'live' : 'no'} latency, seed ${seed}) is never taken for 'up'`, async () => {
            const run = await runFamilyCase({ ...base, mode, align, live, seed, rounding: 'down' });
            expect(run.rateLimited).toBe(0);
            expect(run.pacer.rounding).not.toBe('up');
            // A window on the clock is learned short (answers held alone mid-window); the headers pace it.
            if (mode === 'sliding' || align === 'first-request')
              expect(run.windowEstimateMs).toBeGreaterThanOrEqual(30_000);
          });

  // A sliding log never has a window's last slot: the slot that frees first is left unused and
  // the start goes out between the instants the next one frees at under either rounding.
  for (const seed of [1, 2, 3])
    it(`a sliding window rounded up, with latency (seed ${seed}): 'up', and the window without a pad`, async () => {
      const run = await runFamilyCase({ ...base, mode: 'sliding', live: true, seed });
      expect(run.rateLimited).toBe(0);
      expect(run.pacer).toMatchObject({ rounding: 'up', windowKind: 'sliding' });
      expect(run.windowEstimateMs).toBeGreaterThanOrEqual(30_000);
      expect(run.windowEstimateMs).toBeLessThan(30_000 + 500);
    });

  for (const seed of [1, 2, 3])
    it(`a sliding window rounded down, with latency (seed ${seed}): never 'up', never under W`, async () => {
      const run = await runFamilyCase({ ...base, mode: 'sliding', live: true, seed, rounding: 'down' });
      expect(run.rateLimited).toBe(0);
      expect(run.pacer.rounding).not.toBe('up');
      expect(run.windowEstimateMs).toBeGreaterThanOrEqual(30_000);
    });

  it("a sliding window rounded up, without latency: 'up' and 'sliding'", async () => {
    const run = await runFamilyCase({ ...base, mode: 'sliding' });
    expect(run.rateLimited).toBe(0);
    expect(run.pacer).toMatchObject({ rounding: 'up', windowKind: 'sliding' });
  });
});

/*
 * An answer held alone (an anchor) pads its window by a whole second when Reset may round
 * down. The answers counted after it in the same window each name the anchor's expiry or a
 * later instant, each from its own offset into the second, so the earliest of them bounds W
 * to a fraction of that second: counted from its answer, or from its start plus the learned
 * header delay (a delay learned only from a probe that tells headers at the arrival from
 * headers at the answer: one that did not undercut W and drew a 429 in the property test).
 */
describe('bounding the window by the answers counted after an anchor', () => {
  const cases = [
    { mode: 'fixed', resetBasis: 'window-start' },
    { mode: 'sliding', resetBasis: 'oldest-counted' },
  ] as const;
  for (const { mode, resetBasis } of cases)
    for (const live of [false, true])
      for (const seed of [1, 2, 3])
        it(`a ${mode} 30 s window rounded down (Reset from the ${resetBasis}, ${live ? 'live' : 'no'} latency, seed ${seed}): never under W${mode === 'sliding' || live ? ", under a whole second's pad" : ''}`, async () => {
          const run = await runFamilyCase({ ...base, mode, resetBasis, live, seed, rounding: 'down' });
          expect(run.rateLimited).toBe(0);
          expect(run.windowEstimateMs).toBeGreaterThanOrEqual(30_000);
          // Without the anchor's run bound: 31,000 (no latency) and 31,125 (live).
          if (mode === 'sliding' || live) expect(run.windowEstimateMs).toBeLessThan(31_000);
        });
});

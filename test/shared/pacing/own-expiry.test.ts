import { describe, expect, it } from 'vitest';
import { type FamilyCase, QUIET_FAMILY_CASE, runFamilyCase } from '#bench/pacer-family.ts';

/*
 * A server whose Reset is a full window from each arrival (the API notes allow it) names, at a
 * spent window, the LAST request's expiry, a whole window away; the next slot frees when the
 * oldest counted request leaves. The shared pacer tells such a server apart (two answers of one
 * window name instants as far apart as their starts) and then paces by its log over the learned
 * window, which an answer held alone bounds from above. Servers whose Reset names the next free
 * slot are never taken for one.
 */

const base: FamilyCase = { ...QUIET_FAMILY_CASE, resetBasis: 'arrival', seed: 11 };

const largestGapMs = (starts: number[]) =>
  starts.slice(1).reduce((g, at, i) => Math.max(g, at - starts[i]!), 0);

describe('a Reset counted a full window from the arrival', () => {
  for (const mode of ['fixed', 'sliding'] as const)
    for (const live of [false, true])
      it(`${mode} window, ${live ? '3.5-4 s' : 'no'} latency: learned, and no start waits a whole window`, async () => {
        const run = await runFamilyCase({ ...base, mode, live });
        expect(run.rateLimited).toBe(0);
        expect(run.stalled).toBe(false);
        expect(run.pacer.ownExpiryResets).toBe(true);
        // 10 per 20 s at 2.2 s spacing: the window never binds; a Reset-driven wait would be ~21 s.
        expect(largestGapMs(run.requests.map((r) => r.atMs))).toBeLessThan(10_000);
      });
});

describe('a Reset that names the next free slot', () => {
  for (const mode of ['fixed', 'sliding'] as const)
    for (const resetBasis of ['window-start', 'oldest-counted'] as const)
      for (const align of ['first-request', 'clock'] as const)
        for (const live of [false, true])
          it(`${mode}, ${resetBasis}, ${align}, ${live ? 'live' : 'no'} latency: not taken for one`, async () => {
            const run = await runFamilyCase({ ...base, mode, resetBasis, align, live, windowMs: 30_000 });
            expect(run.rateLimited).toBe(0);
            expect(run.pacer.ownExpiryResets).toBeUndefined();
          });
});

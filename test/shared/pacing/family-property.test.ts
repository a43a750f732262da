import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type FamilyCase, QUIET_FAMILY_CASE, runFamilyCase, smallestGapMs } from '#bench/pacer-family.ts';
import { RESET_BASES, RESET_ROUNDINGS } from '#local/simulator/rate-limiter.ts';

/*
 * The pacer against random members of the upstream family and random fault sequences, in
 * virtual time (bench/pacer-family.ts drives the step's real request layer, recovery.ts, with
 * the shared pacer's model or one chain's own pacing). On EVERY sequence:
 *   1. no two request starts, of any chain, retries and cursor recovery included, are closer
 *      than the minimum spacing;
 *   2. no request is refused (429): every request is ours, so any 429 would be self-caused;
 *   3. the run finishes its pages (nothing stalls).
 */

/** FAMILY_SEQUENCES=N runs more (the note reports a 5000-sequence run). */
const SEQUENCES = Number(process.env.FAMILY_SEQUENCES ?? 300);
const SPACING = 2200;

const familyCaseOf = (minRequests: number, maxRequests: number): fc.Arbitrary<FamilyCase> =>
  fc.record({
    chains: fc.integer({ min: 1, max: 4 }),
    requests: fc.integer({ min: minRequests, max: maxRequests }),
    limit: fc.constant(10),
    windowMs: fc.constantFrom(20_000, 30_000, 60_000),
    mode: fc.constantFrom('fixed' as const, 'sliding' as const),
    resetBasis: fc.constantFrom(...RESET_BASES),
    rounding: fc.constantFrom(...RESET_ROUNDINGS),
    align: fc.constantFrom('first-request' as const, 'clock' as const),
    countRejected: fc.boolean(),
    uncountedErrors: fc.boolean(),
    headerAt: fc.constantFrom('arrival' as const, 'answer' as const),
    live: fc.boolean(),
    tailRate: fc.constantFrom(0, 0.01, 0.1),
    errorRate: fc.constantFrom(0, 0.05, 0.3),
    timeoutRate: fc.constantFrom(0, 0, 0.03),
    cursorRefusalRate: fc.constantFrom(0, 0, 0.05),
    lateRate: fc.constantFrom(0, 0.05, 0.3),
    lateMaxMs: fc.constantFrom(20, 400, 1500),
    seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    // Every store the project ships has the shared pacer, and every request paces through it.
    // The checkpoint-only pacing of a store without one (sharedForOne: false) is not held to
    // faults that span invocations: a failed invocation leaves no trace of the requests it spent.
    sharedForOne: fc.constant(true),
    minSpacingMs: fc.constant(SPACING),
  });

/*
 * Known limit, not generated: a server that computes its headers only when it answers (3.5 s
 * after the arrival) AND whose Reset names a later instant than the slot's real freeing (a
 * fixed window aligned to the clock with Reset counted from its first request, or a fixed
 * window with Reset a full window from the arrival) fools the probe into a header delay that is
 * too short (docs/architecture.md#pacing). The API notes allow each reading alone; servers that
 * compute headers at the answer are our own worst case, not an observation.
 */
const knownLimit = (c: FamilyCase) =>
  c.headerAt === 'answer' &&
  c.mode === 'fixed' &&
  (c.resetBasis === 'arrival' || (c.align === 'clock' && c.resetBasis !== 'window-start'));

// Short runs (a few windows) and long ones (6-16 windows: what the pacer learns late, the
// rounding direction and the kind of Reset, is exercised there).
const RUNS = [
  { label: '15-45 requests', arbitrary: familyCaseOf(15, 45), count: SEQUENCES },
  { label: '60-160 requests', arbitrary: familyCaseOf(60, 160), count: Math.ceil(SEQUENCES / 3) },
];

describe.each(RUNS)('the pacer against the family, in virtual time ($label)', ({ arbitrary, count }) => {
  it(`holds the spacing, draws no 429 and finishes, on ${count} random members and fault sequences`, async () => {
    await fc.assert(
      fc.asyncProperty(
        arbitrary.filter((c) => !knownLimit(c)),
        async (c) => {
          const run = await runFamilyCase(c);
          expect(run.stalled, 'stalled').toBe(false);
          expect(run.pages).toBeGreaterThanOrEqual(c.requests);
          expect(smallestGapMs(run.requests)).toBeGreaterThanOrEqual(SPACING);
          expect(run.rateLimited).toBe(0);
        },
      ),
      { numRuns: count },
    );
  }, 600_000);
});

/*
 * Sequences that 20,000-sequence runs (FAMILY_SEQUENCES=20000) found, kept so that the default
 * count checks them on every run. Each drew one 429 before its fix.
 */
const QUIET: FamilyCase = { ...QUIET_FAMILY_CASE, live: true, sharedForOne: true, minSpacingMs: SPACING };
const FOUND: { why: string; c: FamilyCase }[] = [
  {
    why: 'a window on the clock that rolled between the opener and the phase was taken for a sliding log',
    c: {
      ...QUIET,
      chains: 2,
      requests: 17,
      windowMs: 30_000,
      mode: 'fixed',
      resetBasis: 'window-start',
      rounding: 'exact',
      align: 'clock',
      headerAt: 'answer',
      tailRate: 0.1,
      errorRate: 0.3,
      cursorRefusalRate: 0.05,
      lateRate: 0.05,
      lateMaxMs: 20,
      seed: 1_133_495_620,
    },
  },
  {
    why: 'a header delay learned from a probe that found the slot free only after the latency (headers at the answer)',
    c: {
      ...QUIET,
      chains: 2,
      requests: 98,
      windowMs: 60_000,
      mode: 'fixed',
      resetBasis: 'window-start',
      align: 'clock',
      headerAt: 'answer',
      tailRate: 0.01,
      lateRate: 0.05,
      lateMaxMs: 20,
      seed: 1_847_473_306,
    },
  },
  {
    why: "an anchor's window bounded by later answers counted from their starts plus a learned delay",
    c: {
      ...QUIET,
      chains: 4,
      requests: 60,
      windowMs: 30_000,
      mode: 'sliding',
      resetBasis: 'window-start',
      headerAt: 'answer',
      lateRate: 0.3,
      lateMaxMs: 1500,
      seed: 30,
    },
  },
];

describe('sequences the long runs found', () => {
  for (const { why, c } of FOUND)
    it(`no 429 and the spacing held: ${why}`, async () => {
      const run = await runFamilyCase(c);
      expect(run.stalled).toBe(false);
      expect(smallestGapMs(run.requests)).toBeGreaterThanOrEqual(SPACING);
      expect(run.rateLimited).toBe(0);
    });
});

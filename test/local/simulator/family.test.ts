import { describe, expect, it } from 'vitest';
import { FAMILY, FAMILY_NAMES } from '#local/simulator/family.ts';
import { resolveSimulatorOptions, SIMULATOR_DEFAULTS } from '#local/simulator/options.ts';
import { RateLimiter, resetSecondsOf } from '#local/simulator/rate-limiter.ts';
import { createRequestFaults } from '#local/simulator/request-faults.ts';

/*
 * The family of upstreams the API notes allow: every reading is an option of the pure limiter,
 * and the named members combine them. In-process only (the HTTP side: rate-limit.test.ts).
 */

const W = 20_000;
const limiter = (o: Partial<ConstructorParameters<typeof RateLimiter>[0]>) =>
  new RateLimiter({ limit: 3, windowMs: W, mode: 'sliding', countRejected: false, ...o });

describe('Reset bases', () => {
  it('sliding: window-start names the next free slot, oldest-counted the oldest expiry, arrival a full window', () => {
    const slot = limiter({ resetBasis: 'window-start', countRejected: true });
    const oldest = limiter({ resetBasis: 'oldest-counted', countRejected: true });
    const arrival = limiter({ resetBasis: 'arrival', countRejected: true });
    for (const l of [slot, oldest, arrival]) for (const t of [0, 1000, 2000, 3000, 4000]) l.hit('k', t);
    // Log: 0, 1000, 2000 counted, 3000 and 4000 refused but counted: 5 entries, limit 3.
    const at = 5000;
    const s = slot.hit('k', at);
    const o = oldest.hit('k', at);
    const a = arrival.hit('k', at);
    expect([s.allowed, o.allowed, a.allowed]).toEqual([false, false, false]);
    // The next request passes once the log is down to 2: after 0, 1000, 2000 and 3000 left.
    expect(s.resetMs).toBe(3000 + W - at);
    expect(o.resetMs).toBe(0 + W - at);
    expect(a.resetMs).toBe(W);
  });

  it('fixed: a clock-aligned window resets at the clock multiple; oldest-counted at the first request + W', () => {
    const clock = limiter({ mode: 'fixed', windowAlign: 'clock', resetBasis: 'window-start' });
    const first = limiter({ mode: 'fixed', windowAlign: 'clock', resetBasis: 'oldest-counted' });
    expect(clock.hit('k', 45_000).resetMs).toBe(60_000 - 45_000);
    expect(first.hit('k', 45_000).resetMs).toBe(W);
    // The clock window ends at 60 s: a request then opens a new one with every slot.
    for (const t of [46_000, 47_000]) clock.hit('k', t);
    expect(clock.hit('k', 59_999).allowed).toBe(false);
    expect(clock.hit('k', 60_000)).toMatchObject({ allowed: true, remaining: 2 });
  });

  it('peek reads the window without counting (a server that does not count its errors)', () => {
    const l = limiter({ mode: 'fixed' });
    l.hit('k', 0);
    expect(l.peek('k', 10)).toMatchObject({ allowed: true, remaining: 2 });
    expect(l.peek('k', 20)).toMatchObject({ remaining: 2 });
    expect(l.hit('k', 30)).toMatchObject({ allowed: true, remaining: 1 });
  });
});

describe('Reset rounding', () => {
  it('rounds unscaled whole seconds up or down; exact keeps the fraction; a scale divides the whole seconds', () => {
    expect(resetSecondsOf(12_400, 'up', 1)).toBe(13);
    expect(resetSecondsOf(12_400, 'down', 1)).toBe(12);
    expect(resetSecondsOf(12_400, 'exact', 1)).toBeCloseTo(12.4);
    expect(resetSecondsOf(20_000, 'up', 1)).toBe(20);
    // Scale 20: 620 ms scaled is 12.4 s unscaled, 13 s up = 0.65 s scaled.
    expect(resetSecondsOf(620, 'up', 20)).toBeCloseTo(0.65);
    expect(resetSecondsOf(620, 'down', 20)).toBeCloseTo(0.6);
  });
});

describe('named members', () => {
  it('default is the simulator defaults, and every member resolves to valid options', () => {
    expect(resolveSimulatorOptions({ family: 'default' })).toEqual(resolveSimulatorOptions({}));
    expect(resolveSimulatorOptions({}).windowMode).toBe(SIMULATOR_DEFAULTS.windowMode);
    for (const name of FAMILY_NAMES) {
      const o = resolveSimulatorOptions({ family: name });
      expect(o.family).toBe(name);
      for (const [key, value] of Object.entries(FAMILY[name].options))
        expect(o[key as keyof typeof o]).toBe(value);
    }
  });

  it('explicit options win over the member', () => {
    const o = resolveSimulatorOptions({ family: 'sliding-oldest', countRejected: false, windowSeconds: 60 });
    expect(o).toMatchObject({ windowMode: 'sliding', resetBasis: 'oldest-counted', countRejected: false });
    expect(o.windowSeconds).toBe(60);
  });

  it('together the members cover every value of every reading', () => {
    const seen = (key: string) =>
      new Set(FAMILY_NAMES.map((n) => resolveSimulatorOptions({ family: n })[key as 'windowMode']));
    expect(seen('windowMode')).toEqual(new Set(['fixed', 'sliding']));
    expect(seen('resetBasis')).toEqual(new Set(['window-start', 'oldest-counted', 'arrival']));
    expect(seen('resetRounding')).toEqual(new Set(['exact', 'up', 'down']));
    expect(seen('windowAlign')).toEqual(new Set(['first-request', 'clock']));
    for (const key of ['countRejected', 'uncountedErrors', 'errorHeaders'])
      expect(seen(key)).toEqual(new Set([true, false]));
    expect(FAMILY_NAMES.some((n) => resolveSimulatorOptions({ family: n }).latencyTailRate > 0)).toBe(true);
    expect(FAMILY_NAMES.some((n) => resolveSimulatorOptions({ family: n }).duplicateRowRate > 0)).toBe(true);
  });

  it('an unknown member is refused with the names to pass', () => {
    expect(() => resolveSimulatorOptions({ family: 'nope' })).toThrow(/pass one of default.*at family/s);
  });
});

describe('latency tail', () => {
  it('a share of the answers takes the tail latency', () => {
    const faults = createRequestFaults({
      seed: 7,
      transientErrorRate: 0,
      truncatedBodyRate: 0,
      duplicateRowRate: 0,
      latencyMs: 3500,
      latencyJitterMs: 500,
      latencyTailRate: 0.05,
      latencyTailMs: 8000,
    });
    const lat = Array.from({ length: 2000 }, (_, n) => faults.latencyMs(n + 1, 5000));
    const tail = lat.filter((l) => l === 8000).length;
    expect(tail).toBeGreaterThan(50);
    expect(tail).toBeLessThan(150);
    expect(lat.filter((l) => l !== 8000).every((l) => l >= 3500 && l < 4000)).toBe(true);
  });
});

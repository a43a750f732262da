import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { seededRandom } from '#bench/random.ts';
import { ConfigError, type RateLimitInfo } from '#shared/errors.ts';
import { DEFAULT_SAFETY_MARGIN_MS, planNextRequest, waitSecondsFor } from '#shared/pacing/headers.ts';

/*
 * The pacing is checked against simulated servers that tell the truth in their headers, as the
 * live service does: remaining after counting the request, and Reset = time until a slot comes
 * back (window end when fixed, expiry of the request holding the oldest needed slot when
 * sliding), rounded UP to whole seconds (or exact, as the time-scaled simulator sends).
 * The headers are computed when the request ARRIVES; the client only learns them when the
 * response arrives, after a random latency.
 */

interface Answer {
  status: 200 | 429;
  rateLimit: RateLimitInfo;
  retryAfterSeconds: number | null;
}

type WindowKind = 'fixed' | 'sliding' | 'sliding-full-clear';

interface SimServer {
  request(atMs: number): Answer;
  /** Arrival instants of the requests the server served (200). */
  served: number[];
}

function toSeconds(ms: number, exact: boolean): number {
  return exact ? Math.max(0, ms) / 1000 : Math.max(0, Math.ceil(ms / 1000));
}

function fixedWindowServer(o: {
  limit: number;
  windowMs: number;
  offsetMs: number;
  exact: boolean;
  countRejected: boolean;
}): SimServer {
  const counts = new Map<number, number>();
  const served: number[] = [];
  return {
    served,
    request(t) {
      const index = Math.floor((t - o.offsetMs) / o.windowMs);
      const resetMs = o.offsetMs + (index + 1) * o.windowMs - t;
      const count = counts.get(index) ?? 0;
      const reset = toSeconds(resetMs, o.exact);
      if (count >= o.limit) {
        if (o.countRejected) counts.set(index, count + 1);
        return {
          status: 429,
          rateLimit: { limit: o.limit, remaining: 0, resetSeconds: reset },
          retryAfterSeconds: reset,
        };
      }
      counts.set(index, count + 1);
      served.push(t);
      return {
        status: 200,
        rateLimit: { limit: o.limit, remaining: o.limit - count - 1, resetSeconds: reset },
        retryAfterSeconds: null,
      };
    },
  };
}

/** A sliding log: a request at `e` counts while `t < e + window`. */
function slidingWindowServer(o: {
  limit: number;
  windowMs: number;
  exact: boolean;
  countRejected: boolean;
  /** "sliding-full-clear" reports Reset as the time until the log is empty (a later, still truthful, bound). */
  fullClear: boolean;
  prefill?: number[];
}): SimServer {
  const log: number[] = [...(o.prefill ?? [])];
  const served: number[] = [];
  const resetMs = (t: number) => {
    if (log.length === 0) return o.windowMs;
    if (o.fullClear) return (log.at(-1) as number) + o.windowMs - t;
    // The slot that must expire before the count drops below the limit.
    const holding = log.length >= o.limit ? log[log.length - o.limit] : log[0];
    return (holding as number) + o.windowMs - t;
  };
  return {
    served,
    request(t) {
      while (log.length > 0 && (log[0] as number) + o.windowMs <= t) log.shift();
      if (log.length >= o.limit) {
        if (o.countRejected) log.push(t);
        const reset = toSeconds(resetMs(t), o.exact);
        return {
          status: 429,
          rateLimit: { limit: o.limit, remaining: 0, resetSeconds: reset },
          retryAfterSeconds: reset,
        };
      }
      log.push(t);
      served.push(t);
      return {
        status: 200,
        rateLimit: {
          limit: o.limit,
          remaining: o.limit - log.length,
          resetSeconds: toSeconds(resetMs(t), o.exact),
        },
        retryAfterSeconds: null,
      };
    },
  };
}

interface Latency {
  /** Client to server, max ms. */
  upMs: number;
  /** Server to client (the page being produced and sent), max ms. */
  downMs: number;
  /** After the planned instant before the request really leaves (Wait state, cold start, sleep jitter), max ms. */
  processingMs: number;
}

/**
 * A client that sends each request at planNextRequest's instant plus a random non-negative
 * processing delay (never before the previous response: requests are sequential).
 */
function runClient(o: {
  server: SimServer;
  requests: number;
  startMs: number;
  minSpacingMs: number;
  latency: Latency;
  seed: number;
}): { sends: number[]; rateLimited: number } {
  const random = seededRandom(o.seed);
  const sends: number[] = [];
  let rateLimited = 0;
  let t = o.startMs;
  for (let i = 0; i < o.requests; i++) {
    const sentAt = t;
    sends.push(sentAt);
    const arrival = sentAt + random() * o.latency.upMs;
    const answer = o.server.request(arrival);
    const responseAt = arrival + random() * o.latency.downMs;
    if (answer.status === 429) rateLimited++;
    const plan = planNextRequest({
      lastRequestStartMs: sentAt,
      responseAtMs: responseAt,
      minSpacingMs: o.minSpacingMs,
      rateLimit: answer.rateLimit,
      retryAfterSeconds: answer.retryAfterSeconds,
    });
    t = Math.max(plan.notBeforeMs, responseAt) + random() * o.latency.processingMs;
  }
  return { sends, rateLimited };
}

function makeServer(
  kind: WindowKind,
  o: { windowMs: number; offsetMs: number; exact: boolean; countRejected: boolean },
) {
  return kind === 'fixed'
    ? fixedWindowServer({ limit: 10, ...o })
    : slidingWindowServer({ limit: 10, ...o, fullClear: kind === 'sliding-full-clear' });
}

/** Independent of the server's bookkeeping: never more than `limit` served requests in any window of its definition. */
function assertWithinLimit(
  kind: WindowKind,
  served: number[],
  windowMs: number,
  offsetMs: number,
  limit = 10,
) {
  if (kind === 'fixed') {
    const perWindow = new Map<number, number>();
    for (const t of served) {
      const index = Math.floor((t - offsetMs) / windowMs);
      perWindow.set(index, (perWindow.get(index) ?? 0) + 1);
    }
    expect(Math.max(0, ...perWindow.values())).toBeLessThanOrEqual(limit);
  } else {
    for (let i = 0; i + limit < served.length; i++) {
      expect(served[i + limit]! - served[i]!).toBeGreaterThanOrEqual(windowMs);
    }
  }
}

const windowArb = fc.constantFrom(20_000, 30_000, 60_000);
const kindArb = fc.constantFrom<WindowKind>('fixed', 'sliding', 'sliding-full-clear');

/** Mean spacing between request starts once past the start-up burst. */
function steadyPeriod(sends: number[], skip: number): number {
  return (sends.at(-1)! - sends[skip]!) / (sends.length - 1 - skip);
}

describe('planNextRequest', () => {
  it('keeps min spacing from the request start while the window has budget', () => {
    const plan = planNextRequest({
      lastRequestStartMs: 10_000,
      responseAtMs: 13_500,
      minSpacingMs: 2200,
      rateLimit: { limit: 10, remaining: 4, resetSeconds: 40 },
    });
    expect(plan.notBeforeMs).toBe(12_200);
    expect(plan.reason).toContain('min spacing 2200 ms (4 of 10 left');
  });

  it('waits for the reset, measured from the response, when the window is exhausted', () => {
    const plan = planNextRequest({
      lastRequestStartMs: 10_000,
      responseAtMs: 13_500,
      minSpacingMs: 2200,
      rateLimit: { limit: 10, remaining: 0, resetSeconds: 17 },
    });
    expect(plan.notBeforeMs).toBe(13_500 + 17_000 + DEFAULT_SAFETY_MARGIN_MS);
    expect(plan.reason).toContain('window exhausted');
  });

  it('keeps min spacing when the reset comes sooner', () => {
    const plan = planNextRequest({
      lastRequestStartMs: 10_000,
      responseAtMs: 10_100,
      minSpacingMs: 2200,
      rateLimit: { limit: 10, remaining: 0, resetSeconds: 1 },
      safetyMarginMs: 0,
    });
    expect(plan.notBeforeMs).toBe(12_200);
  });

  it('honours Retry-After after a 429, with the margin', () => {
    const plan = planNextRequest({
      lastRequestStartMs: 5_000,
      responseAtMs: 5_300,
      minSpacingMs: 2200,
      rateLimit: { limit: 10, remaining: 0, resetSeconds: 46 },
      retryAfterSeconds: 46,
      safetyMarginMs: 100,
    });
    expect(plan).toEqual({
      notBeforeMs: 5_300 + 46_000 + 100,
      reason: expect.stringContaining('Retry-After 46 s'),
    });
  });

  it('honours a Retry-After longer than the reset and one without rate-limit headers', () => {
    expect(
      planNextRequest({
        lastRequestStartMs: 0,
        responseAtMs: 1000,
        minSpacingMs: 0,
        rateLimit: { limit: 10, remaining: 0, resetSeconds: 2 },
        retryAfterSeconds: 30,
        safetyMarginMs: 0,
      }).notBeforeMs,
    ).toBe(31_000);
    expect(
      planNextRequest({
        lastRequestStartMs: 0,
        responseAtMs: 0,
        minSpacingMs: 2200,
        rateLimit: null,
        retryAfterSeconds: 1.5,
      }).notBeforeMs,
    ).toBe(2200);
  });

  it('uses min spacing alone when the response had no rate-limit headers', () => {
    const plan = planNextRequest({
      lastRequestStartMs: 1_000,
      responseAtMs: 4_000,
      minSpacingMs: 2200,
      rateLimit: null,
    });
    expect(plan).toEqual({ notBeforeMs: 3_200, reason: 'min spacing 2200 ms (no rate-limit headers)' });
  });

  it('rounds a fractional instant up to a whole millisecond', () => {
    const plan = planNextRequest({
      lastRequestStartMs: 0,
      responseAtMs: 100,
      minSpacingMs: 0,
      rateLimit: { limit: 10, remaining: 0, resetSeconds: 1.2345 },
      safetyMarginMs: 0,
    });
    expect(plan.notBeforeMs).toBe(1335);
  });

  it.each([
    ['a NaN instant', { lastRequestStartMs: Number.NaN }],
    ['a negative spacing', { minSpacingMs: -1 }],
    ['a negative remaining', { rateLimit: { limit: 10, remaining: -1, resetSeconds: 3 } }],
    ['an infinite retry-after', { retryAfterSeconds: Number.POSITIVE_INFINITY }],
  ])('refuses %s with a ConfigError', (_label, patch) => {
    expect(() =>
      planNextRequest({
        lastRequestStartMs: 0,
        responseAtMs: 0,
        minSpacingMs: 2200,
        rateLimit: null,
        ...patch,
      }),
    ).toThrow(ConfigError);
  });

  it('never causes a 429 against truthful fixed or sliding windows of 20/30/60 s (property)', () => {
    fc.assert(
      fc.property(
        kindArb,
        windowArb,
        fc.integer({ min: 0, max: 5_000 }),
        fc.boolean(),
        fc.boolean(),
        fc.integer({ min: 0, max: 59_999 }),
        fc.record({
          upMs: fc.integer({ min: 0, max: 500 }),
          downMs: fc.integer({ min: 0, max: 5_000 }),
          processingMs: fc.integer({ min: 0, max: 3_000 }),
        }),
        fc.integer(),
        (kind, windowMs, minSpacingMs, exact, countRejected, offsetMs, latency, seed) => {
          const server = makeServer(kind, { windowMs, offsetMs, exact, countRejected });
          const { rateLimited } = runClient({
            server,
            requests: 60,
            startMs: 1_000_000 + offsetMs,
            minSpacingMs,
            latency,
            seed,
          });
          expect(rateLimited).toBe(0);
          assertWithinLimit(kind, server.served, windowMs, offsetMs);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('runs at the floor (window / limit) when min spacing is below it (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<WindowKind>('fixed', 'sliding'),
        windowArb,
        fc.boolean(),
        fc.integer({ min: 0, max: 59_999 }),
        // Below window/limit for every window; uneven values keep requests off whole-second phases.
        fc.integer({ min: 500, max: 1_500 }),
        fc.integer(),
        (kind, windowMs, exact, offsetMs, minSpacingMs, seed) => {
          const server = makeServer(kind, { windowMs, offsetMs, exact, countRejected: true });
          const { sends, rateLimited } = runClient({
            server,
            requests: 400,
            startMs: 1_000_000 + offsetMs,
            minSpacingMs,
            latency: { upMs: 20, downMs: 50, processingMs: 30 },
            seed,
          });
          expect(rateLimited).toBe(0);
          const floor = windowMs / 10;
          const period = steadyPeriod(sends, 50);
          // Whole-second Reset costs up to 1 s (0.5 s on average) per window plus the margin;
          // the exact header costs the margin only. At 20 s windows that is at most about 6.5 %.
          expect(period).toBeGreaterThanOrEqual(floor * 0.96);
          expect(period).toBeLessThanOrEqual(floor * (exact ? 1.02 : 1.065));
          if (kind === 'fixed') {
            // Every window between the first and the last is used to the full limit.
            const perWindow = new Map<number, number>();
            for (const t of server.served) {
              const index = Math.floor((t - offsetMs) / windowMs);
              perWindow.set(index, (perWindow.get(index) ?? 0) + 1);
            }
            const indices = [...perWindow.keys()].sort((a, b) => a - b).slice(1, -1);
            expect(indices.length).toBeGreaterThan(5);
            for (const index of indices) expect(perWindow.get(index)).toBe(10);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  // Not checked for 'sliding-full-clear': a server whose Reset means "until the log is empty" makes
  // any header-driven client wait for more than it must; the live service's Retry-After equals
  // Reset, which only makes sense as "until a request is accepted again".
  it('runs at min spacing when it is the binding constraint (2200 ms vs 20 s / 10) (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<WindowKind>('fixed', 'sliding'),
        fc.boolean(),
        fc.integer({ min: 0, max: 19_999 }),
        fc.integer(),
        (kind, exact, offsetMs, seed) => {
          const server = makeServer(kind, { windowMs: 20_000, offsetMs, exact, countRejected: true });
          const processingMs = 30;
          const { sends, rateLimited } = runClient({
            server,
            requests: 300,
            startMs: 1_000_000 + offsetMs,
            minSpacingMs: 2200,
            latency: { upMs: 20, downMs: 50, processingMs },
            seed,
          });
          expect(rateLimited).toBe(0);
          const period = steadyPeriod(sends, 0);
          expect(period).toBeGreaterThanOrEqual(2200);
          expect(period).toBeLessThanOrEqual(2200 + processingMs);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('recovers from a window another client filled: one 429, then Retry-After is enough (property)', () => {
    fc.assert(
      fc.property(
        windowArb,
        fc.boolean(),
        fc.boolean(),
        fc.array(fc.integer({ min: 1, max: 9_999 }), { minLength: 10, maxLength: 10 }),
        fc.integer({ min: 0, max: 3_000 }),
        fc.integer(),
        (windowMs, exact, countRejected, ages, minSpacingMs, seed) => {
          const startMs = 1_000_000;
          // Ten foreign requests within the last window (sliding) or the current window (fixed).
          const prefill = ages.map((age) => startMs - age).sort((a, b) => a - b);
          const sliding = slidingWindowServer({
            limit: 10,
            windowMs,
            exact,
            countRejected,
            fullClear: false,
            prefill,
          });
          const fixed = fixedWindowServer({
            limit: 10,
            windowMs,
            offsetMs: startMs - 10_000,
            exact,
            countRejected,
          });
          for (const t of prefill) fixed.request(t);
          fixed.served.length = 0;
          for (const server of [sliding, fixed]) {
            const { sends, rateLimited } = runClient({
              server,
              requests: 30,
              startMs,
              minSpacingMs,
              latency: { upMs: 50, downMs: 2_000, processingMs: 500 },
              seed,
            });
            expect(rateLimited).toBe(1);
            expect(server.served).toHaveLength(sends.length - 1);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('waitSecondsFor', () => {
  it('splits a wait into whole seconds and the sub-second remainder', () => {
    expect(waitSecondsFor(12_345, 10_000)).toEqual({ waitSeconds: 2, remainderMs: 345 });
    expect(waitSecondsFor(11_000, 10_000)).toEqual({ waitSeconds: 1, remainderMs: 0 });
    expect(waitSecondsFor(10_999, 10_000)).toEqual({ waitSeconds: 0, remainderMs: 999 });
  });

  it('never returns a negative wait', () => {
    expect(waitSecondsFor(9_000, 10_000)).toEqual({ waitSeconds: 0, remainderMs: 0 });
  });

  it('refuses non-finite instants', () => {
    expect(() => waitSecondsFor(Number.NaN, 0)).toThrow(ConfigError);
  });

  it('adds up to the whole wait and never waits less (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 42 }),
        fc.integer({ min: 0, max: 2 ** 42 }),
        (notBefore, now) => {
          const { waitSeconds, remainderMs } = waitSecondsFor(notBefore, now);
          expect(Number.isInteger(waitSeconds)).toBe(true);
          expect(waitSeconds).toBeGreaterThanOrEqual(0);
          expect(remainderMs).toBeGreaterThanOrEqual(0);
          expect(remainderMs).toBeLessThan(1000);
          expect(now + waitSeconds * 1000 + remainderMs).toBeGreaterThanOrEqual(notBefore);
        },
      ),
    );
  });
});

/*
 * Per-key rate limiter with every reading of the rate limit the API notes allow (the family:
 * family.ts names combinations of them). Pure: the caller passes the instant.
 *
 * mode fixed:    a window lasts `windowMs`; `limit` requests pass in it. It opens at a key's
 *                first request (`windowAlign` first-request) or on multiples of `windowMs` of
 *                the clock (`clock`).
 * mode sliding:  a log of request instants over the last `windowMs`; a request passes when
 *                fewer than `limit` are logged.
 * countRejected: refused requests are counted (logged) too, so retrying into a full window
 *                keeps it full.
 * resetBasis:    what X-RateLimit-Reset counts to:
 *                window-start    the end of the fixed window / the instant a slot frees for
 *                                the next request (sliding);
 *                oldest-counted  the expiry of the oldest counted request (a sliding log that
 *                                counts refused requests may need several to expire before a
 *                                slot frees: this Reset is then early);
 *                arrival         this request's own expiry: a full window from its arrival.
 * resetRounding: whole seconds rounded `up` or `down`; `exact` (the default) rounds the
 *                whole-second header up and keeps the fractional `-Exact` header exact.
 */

export const WINDOW_MODES = ['fixed', 'sliding'] as const;
export type WindowMode = (typeof WINDOW_MODES)[number];
export const RESET_BASES = ['window-start', 'oldest-counted', 'arrival'] as const;
export type ResetBasis = (typeof RESET_BASES)[number];
export const RESET_ROUNDINGS = ['exact', 'up', 'down'] as const;
export type ResetRounding = (typeof RESET_ROUNDINGS)[number];
export const WINDOW_ALIGNS = ['first-request', 'clock'] as const;
export type WindowAlign = (typeof WINDOW_ALIGNS)[number];

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Milliseconds to the instant Reset names (by `resetBasis`), unrounded. */
  resetMs: number;
}

export interface RateLimiterOptions {
  limit: number;
  windowMs: number;
  mode: WindowMode;
  countRejected: boolean;
  /** @default 'window-start' */
  resetBasis?: ResetBasis;
  /** Fixed windows only. @default 'first-request' */
  windowAlign?: WindowAlign;
}

export class RateLimiter {
  private readonly fixed = new Map<string, { start: number; count: number; first: number }>();
  private readonly logs = new Map<string, number[]>();

  constructor(private readonly options: RateLimiterOptions) {}

  /** Records one request of `key` at `now` (ms) and says whether it passes. */
  hit(key: string, now: number): RateDecision {
    return this.options.mode === 'fixed' ? this.hitFixed(key, now, true) : this.hitSliding(key, now, true);
  }

  /**
   * What the headers of an answer at `now` say without counting it (a server that does not
   * count its errors). `allowed` says whether a counted request would have passed.
   */
  peek(key: string, now: number): RateDecision {
    return this.options.mode === 'fixed' ? this.hitFixed(key, now, false) : this.hitSliding(key, now, false);
  }

  private hitFixed(key: string, now: number, count: boolean): RateDecision {
    const { limit, windowMs } = this.options;
    const basis = this.options.resetBasis ?? 'window-start';
    let w = this.fixed.get(key);
    if (!w || now >= w.start + windowMs) {
      const start = this.options.windowAlign === 'clock' ? Math.floor(now / windowMs) * windowMs : now;
      w = { start, count: 0, first: now };
      this.fixed.set(key, w);
    }
    const allowed = w.count < limit;
    if (count && (allowed || this.options.countRejected)) w.count++;
    const resetAt =
      basis === 'arrival'
        ? now + windowMs
        : basis === 'oldest-counted'
          ? w.first + windowMs
          : w.start + windowMs;
    return { allowed, limit, remaining: Math.max(0, limit - w.count), resetMs: resetAt - now };
  }

  private hitSliding(key: string, now: number, count: boolean): RateDecision {
    const { limit, windowMs } = this.options;
    const basis = this.options.resetBasis ?? 'window-start';
    let log = this.logs.get(key);
    if (!log) {
      log = [];
      this.logs.set(key, log);
    }
    let drop = 0;
    while (drop < log.length && log[drop]! + windowMs <= now) drop++;
    if (drop > 0) log.splice(0, drop);
    const allowed = log.length < limit;
    if (count && (allowed || this.options.countRejected)) log.push(now);
    let resetAt: number;
    if (basis === 'arrival') resetAt = now + windowMs;
    else if (log.length === 0) resetAt = now + windowMs;
    else if (basis === 'oldest-counted') resetAt = log[0]! + windowMs;
    else {
      // The next request passes once the log is down to limit - 1 entries.
      const blocking = log.length - limit;
      resetAt = (allowed ? log[0]! : log[Math.max(0, blocking)]!) + windowMs;
    }
    return { allowed, limit, remaining: Math.max(0, limit - log.length), resetMs: resetAt - now };
  }
}

/**
 * The Reset header's value in seconds, unscaled whole seconds rounded as the member says;
 * `exact` gives the fraction (the `-Exact` header of a scaled run; its whole-second header
 * rounds up). `scale` is the run's time scale (`resetMs` is in scaled ms).
 */
export function resetSecondsOf(resetMs: number, rounding: ResetRounding, scale: number): number {
  const unscaled = (Math.max(0, resetMs) * scale) / 1000;
  if (rounding === 'exact') return unscaled / scale;
  // A few ns of float error must not turn 20 into 21.
  const whole = rounding === 'up' ? Math.ceil(unscaled - 1e-9) : Math.floor(unscaled + 1e-9);
  return whole / scale;
}

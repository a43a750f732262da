/*
 * Per-key rate limiter with the two window semantics observers disagree about.
 *
 * fixed:   a window opens at a key's first request and lasts `windowMs`; `limit` requests pass
 *          in it. Reset = time until the window closes.
 * sliding: a log of request instants over the last `windowMs`; a request passes when fewer than
 *          `limit` are logged. Reset = time until the log frees a slot for the next request.
 * countRejected: refused requests are logged too. Only observable in sliding mode (a fixed
 *          window's reset instant does not depend on how many requests it refused).
 */

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Milliseconds until the window resets (fixed) or frees a slot (sliding). */
  resetMs: number;
}

export interface RateLimiterOptions {
  limit: number;
  windowMs: number;
  mode: 'fixed' | 'sliding';
  countRejected: boolean;
}

export class RateLimiter {
  private readonly fixed = new Map<string, { start: number; count: number }>();
  private readonly logs = new Map<string, number[]>();

  constructor(private readonly options: RateLimiterOptions) {}

  /** Records one request of `key` at `now` (ms) and says whether it passes. */
  hit(key: string, now: number): RateDecision {
    return this.options.mode === 'fixed' ? this.hitFixed(key, now) : this.hitSliding(key, now);
  }

  private hitFixed(key: string, now: number): RateDecision {
    const { limit, windowMs } = this.options;
    let w = this.fixed.get(key);
    if (!w || now >= w.start + windowMs) {
      w = { start: now, count: 0 };
      this.fixed.set(key, w);
    }
    const resetMs = w.start + windowMs - now;
    if (w.count < limit) {
      w.count++;
      return { allowed: true, limit, remaining: limit - w.count, resetMs };
    }
    if (this.options.countRejected) w.count++;
    return { allowed: false, limit, remaining: 0, resetMs };
  }

  private hitSliding(key: string, now: number): RateDecision {
    const { limit, windowMs } = this.options;
    let log = this.logs.get(key);
    if (!log) {
      log = [];
      this.logs.set(key, log);
    }
    let drop = 0;
    while (drop < log.length && log[drop]! + windowMs <= now) drop++;
    if (drop > 0) log.splice(0, drop);
    const allowed = log.length < limit;
    if (allowed || this.options.countRejected) log.push(now);
    // The next request passes once the log is down to limit - 1 entries.
    const blocking = log.length - limit;
    const resetMs = allowed ? log[0]! + windowMs - now : log[Math.max(0, blocking)]! + windowMs - now;
    return { allowed, limit, remaining: Math.max(0, limit - log.length), resetMs };
  }
}

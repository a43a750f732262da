import type { RateLimitInfo } from '../errors.ts';
import { roundingPadMs } from './backoff.ts';
import { LONGEST_WINDOW_SECONDS } from './rate-limit-headers.ts';

/**
 * The step's view of the upstream's budget: when the next request may start, and how many
 * requests the window still allows.
 *
 * The estimate starts from the last headers the checkpoint holds. A free slot stays free until
 * we use it (we are the key's only client), so `remaining` is a lower bound; a spent window
 * (remaining 0) was waited out before this invocation (the checkpoint's nextRequestAtMs), which
 * frees at least one slot. Each request whose answer carries no headers (a 5xx from the load
 * balancer, a timeout, a reset connection) is assumed to have counted.
 */
export class RequestPacer {
  #lastStartMs: number | null = null;
  #notBeforeMs: number;
  #remaining: number;
  #lastRate: RateLimitInfo | null;
  readonly #minSpacingMs: number;
  readonly #safetyMarginMs: number;
  readonly #resetGranularityMs: number;
  readonly #longestWindowMs: number;

  constructor(
    cp: { nextRequestAtMs: number | null; lastRateLimit: RateLimitInfo | null },
    config: {
      minSpacingMs: number;
      safetyMarginMs: number;
      resetGranularityMs?: number;
      longestWindowMs?: number;
    },
  ) {
    this.#notBeforeMs = cp.nextRequestAtMs ?? 0;
    this.#lastRate = cp.lastRateLimit;
    this.#remaining =
      cp.lastRateLimit === null ? Number.POSITIVE_INFINITY : Math.max(1, cp.lastRateLimit.remaining);
    this.#minSpacingMs = config.minSpacingMs;
    this.#safetyMarginMs = config.safetyMarginMs;
    this.#resetGranularityMs = config.resetGranularityMs ?? 0;
    this.#longestWindowMs = config.longestWindowMs ?? LONGEST_WINDOW_SECONDS * 1000;
  }

  /** When the last request of this invocation started, if any. */
  get lastStartMs(): number | null {
    return this.#lastStartMs;
  }

  /** Earliest start of the next request: the stored due instant and the spacing after the last one. */
  nextStartMs(): number {
    return this.#lastStartMs === null
      ? this.#notBeforeMs
      : Math.max(this.#notBeforeMs, this.#lastStartMs + this.#minSpacingMs);
  }

  /** true when the window has no slot left for another request. */
  windowSpent(): boolean {
    return this.#remaining <= 0;
  }

  /**
   * When a slot comes back. The last Reset seen names when the OLDEST slot frees; when failed
   * answers used up more than the slots the headers named, it cannot say when the next one
   * frees, so the wait is then a full window of the longest kind after this invocation's last
   * request (every request of ours has left any window by then). Late, never early.
   */
  windowBackAtMs(nowMs: number): { notBeforeMs: number; rateLimit: RateLimitInfo } {
    const rate = this.#lastRate ?? { limit: 0, remaining: 0, resetSeconds: 0 };
    const beyondHeaders = this.#remaining < 0 || (this.#lastRate?.remaining ?? 0) <= 0;
    const drained =
      beyondHeaders && this.#lastStartMs !== null
        ? this.#lastStartMs + this.#longestWindowMs + this.#safetyMarginMs
        : Number.NEGATIVE_INFINITY;
    return {
      notBeforeMs: Math.ceil(
        Math.max(
          drained,
          this.nextStartMs(),
          nowMs +
            rate.resetSeconds * 1000 +
            roundingPadMs(rate.resetSeconds * 1000, this.#resetGranularityMs) +
            this.#safetyMarginMs,
        ),
      ),
      rateLimit: { ...rate, remaining: 0 },
    };
  }

  started(nowMs: number): void {
    this.#lastStartMs = nowMs;
  }

  /** The answer's headers when it carried them; otherwise the request is counted as spent. */
  answered(rateLimit: RateLimitInfo | null | undefined): void {
    if (rateLimit) {
      this.#lastRate = rateLimit;
      this.#remaining = rateLimit.remaining;
    } else {
      this.#remaining -= 1;
    }
  }
}

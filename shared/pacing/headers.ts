import { z } from 'zod';
import { configDefaults } from '../config.ts';
import { ConfigError, type RateLimitInfo } from '../errors.ts';

/**
 * Request pacing from the rate-limit headers. Pure: no clock, no I/O.
 *
 * The upstream allows 10 requests per window, the window is 20, 30 or 60 s depending on key and
 * date, and whether it is fixed or sliding is disputed. The plan therefore trusts the headers:
 *
 * - While `remaining > 0` the next request goes out after `minSpacingMs` only. A free slot now
 *   stays free until we use it (we are the only client of the key), in a fixed window (slots
 *   only come back at the boundary) and in a sliding log (slots only come back as old requests
 *   expire) alike, so using it at once can never cause a 429.
 * - When `remaining === 0` the next request waits for `X-RateLimit-Reset`: the instant a slot
 *   comes back (the window end if fixed, the oldest request's expiry if sliding).
 * - After a 429 it waits `Retry-After`.
 *
 * Why not spread the remaining budget evenly over the window (spacing = reset / remaining)?
 * In a fixed window that puts the last request exactly on the boundary, so only 9 of 10 slots
 * are used per window: about 11 % slower. Using slots as soon as they exist reaches the floor
 * (limit per window) in both window kinds: in a sliding log each request then waits for the
 * slot of the request 10 before it, so the long-run period is window/limit plus the slack below.
 * If a server meant "Reset" as the time until the whole window is empty, waiting for it is
 * still safe, only slower.
 *
 * Where the slack comes from, and why each part is needed:
 * - Reset is measured from `responseAtMs`, not the request start: the server may compute its
 *   headers at any instant between the two (a 5000-event page takes 3.5-4 s), and the response
 *   is the latest instant it can have done so. Measuring from the start would be early by up to
 *   the whole latency.
 * - The live service rounds Reset up to whole seconds, which already errs late; the safety
 *   margin covers a server that rounds to nearest and clock granularity. When the simulator's
 *   fractional `X-RateLimit-Reset-Exact` is used, the margin is the only slack.
 */

/** Added to every header-derived instant (Reset, Retry-After); the setting's default in shared/config.ts. */
export const DEFAULT_SAFETY_MARGIN_MS = configDefaults.safetyMarginMs;

const finite = z.number().refine(Number.isFinite, { error: 'must be a finite number' });
const nonNegative = finite.refine((n) => n >= 0, { error: 'must be >= 0' });

const planInputSchema = z.object({
  lastRequestStartMs: finite,
  responseAtMs: finite,
  minSpacingMs: nonNegative,
  rateLimit: z
    .object({
      limit: nonNegative,
      remaining: nonNegative,
      resetSeconds: nonNegative,
    })
    .nullable(),
  retryAfterSeconds: nonNegative.nullish(),
  safetyMarginMs: nonNegative.optional(),
});

export interface PlanInput {
  /** When the last request was sent (epoch ms). */
  lastRequestStartMs: number;
  /** When its response (or error) arrived (epoch ms). */
  responseAtMs: number;
  /** The configured floor between two request starts (MIN_REQUEST_SPACING_MS). */
  minSpacingMs: number;
  /** The last response's rate-limit headers, or null when it carried none. */
  rateLimit: RateLimitInfo | null;
  /** From a 429: seconds the server asked us to wait. */
  retryAfterSeconds?: number | null;
  /** Added to header-derived instants. @default DEFAULT_SAFETY_MARGIN_MS */
  safetyMarginMs?: number;
}

export interface PacingPlan {
  /** Earliest instant (epoch ms) the next request may be sent. */
  notBeforeMs: number;
  /** Which constraint decided it, for logs. */
  reason: string;
}

/** Computes the earliest instant of the next request. See the module comment for the reasoning. */
export function planNextRequest(input: PlanInput): PacingPlan {
  const parsed = planInputSchema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(
      `planNextRequest got invalid input: pass the last request's start and response instants in epoch ms and the headers as parsed by the client.\n${z.prettifyError(parsed.error)}`,
    );
  }
  const { lastRequestStartMs, responseAtMs, minSpacingMs, rateLimit, retryAfterSeconds } = parsed.data;
  const margin = parsed.data.safetyMarginMs ?? DEFAULT_SAFETY_MARGIN_MS;

  let notBeforeMs = lastRequestStartMs + minSpacingMs;
  let reason =
    rateLimit === null
      ? `min spacing ${minSpacingMs} ms (no rate-limit headers)`
      : `min spacing ${minSpacingMs} ms (${rateLimit.remaining} of ${rateLimit.limit} left in the window)`;

  if (rateLimit !== null && rateLimit.remaining <= 0) {
    const resetAt = responseAtMs + rateLimit.resetSeconds * 1000 + margin;
    if (resetAt > notBeforeMs) {
      notBeforeMs = resetAt;
      reason = `window exhausted (0 of ${rateLimit.limit} left): reset in ${rateLimit.resetSeconds} s + ${margin} ms margin`;
    }
  }
  if (retryAfterSeconds !== null && retryAfterSeconds !== undefined) {
    const retryAt = responseAtMs + retryAfterSeconds * 1000 + margin;
    if (retryAt >= notBeforeMs) {
      notBeforeMs = retryAt;
      reason = `rate limited (429): Retry-After ${retryAfterSeconds} s + ${margin} ms margin`;
    }
  }
  return { notBeforeMs: Math.ceil(notBeforeMs), reason };
}

/**
 * Splits the wait until `notBeforeMs` into whole seconds for the Step Functions Wait state
 * (which cannot wait fractions) and the remainder the function sleeps before its request.
 * Never negative: a past instant gives zero and zero.
 */
export function waitSecondsFor(
  notBeforeMs: number,
  nowMs: number,
): { waitSeconds: number; remainderMs: number } {
  const waitMs = Math.max(0, Math.ceil(notBeforeMs - nowMs));
  if (!Number.isFinite(waitMs)) {
    throw new ConfigError(
      `waitSecondsFor got non-finite instants (notBeforeMs=${notBeforeMs}, nowMs=${nowMs}): pass epoch milliseconds`,
    );
  }
  const waitSeconds = Math.floor(waitMs / 1000);
  return { waitSeconds, remainderMs: waitMs - waitSeconds * 1000 };
}

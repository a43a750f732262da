import { z } from 'zod';
import { configDefaults } from '../config.ts';
import { ConfigError, type RateLimitInfo } from '../errors.ts';
import { roundingPadMs } from './backoff.ts';

/**
 * Request pacing from the rate-limit headers. Pure: no clock, no I/O. While the window has
 * slots the next request waits only for the spacing; with none left it waits for Reset
 * (measured from the response, plus a safety margin); after a 429, for Retry-After. Why this
 * plan and where each part of its slack comes from: docs/architecture.md#pacing.
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
  resetGranularityMs: nonNegative.optional(),
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
  /** A Reset / Retry-After that is a whole multiple of this may have been rounded down by one. @default 0 */
  resetGranularityMs?: number;
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
  const granularity = parsed.data.resetGranularityMs ?? 0;
  const pad = (seconds: number) => roundingPadMs(seconds * 1000, granularity);

  let notBeforeMs = lastRequestStartMs + minSpacingMs;
  let reason =
    rateLimit === null
      ? `min spacing ${minSpacingMs} ms (no rate-limit headers)`
      : `min spacing ${minSpacingMs} ms (${rateLimit.remaining} of ${rateLimit.limit} left in the window)`;

  if (rateLimit !== null && rateLimit.remaining <= 0) {
    const resetAt = responseAtMs + rateLimit.resetSeconds * 1000 + pad(rateLimit.resetSeconds) + margin;
    if (resetAt > notBeforeMs) {
      notBeforeMs = resetAt;
      reason = `window exhausted (0 of ${rateLimit.limit} left): reset in ${rateLimit.resetSeconds} s + ${margin} ms margin`;
    }
  }
  if (retryAfterSeconds !== null && retryAfterSeconds !== undefined) {
    const retryAt = responseAtMs + retryAfterSeconds * 1000 + pad(retryAfterSeconds) + margin;
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

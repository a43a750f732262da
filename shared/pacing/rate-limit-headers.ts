import type { RateLimitInfo } from '../errors.ts';

/*
 * Reading the rate-limit headers of an upstream we do not control. Pure: no clock (the caller
 * passes the instant an HTTP-date Retry-After is measured from), no I/O.
 *
 * - Each header is read on its own, so one bad value does not throw the others away; a bad or
 *   missing one is replaced by the value that waits longest (Remaining 0, Reset the cap), and
 *   the answer is marked `suspect` with the reason. A suspect answer never teaches the shared
 *   pacer a window or a limit.
 * - Reset and Retry-After are capped at MAX_WAIT_SECONDS, twice the longest window the API
 *   notes report (60 s): `X-RateLimit-Reset: 100000` once must not park a run for 27.8 hours.
 * - Retry-After is seconds or an HTTP date (RFC 9110 10.2.3).
 */

/** The longest window the API notes report (../shared/datasync-api.md): 60 s. */
export const LONGEST_WINDOW_SECONDS = 60;
/** The most any header makes us wait: twice the longest window. */
export const MAX_WAIT_SECONDS = 2 * LONGEST_WINDOW_SECONDS;

type HeaderGet = (name: string) => string | null;

const NUMBER = /^\d+(?:\.\d+)?$/;

function readNumber(get: HeaderGet, name: string): { value: number | null; bad: string | null } {
  const raw = get(name);
  if (raw === null) return { value: null, bad: null };
  const text = raw.trim();
  if (!NUMBER.test(text)) return { value: null, bad: `${name}: ${JSON.stringify(raw.slice(0, 40))}` };
  return { value: Number(text), bad: null };
}

/** Caps a wait in seconds; says so when it did. */
export function capWaitSeconds(seconds: number, what: string): { seconds: number; note: string | null } {
  if (seconds <= MAX_WAIT_SECONDS) return { seconds, note: null };
  return {
    seconds: MAX_WAIT_SECONDS,
    note: `${what} ${seconds} s is beyond the ${MAX_WAIT_SECONDS} s cap (twice the longest window the API notes report), waiting ${MAX_WAIT_SECONDS} s`,
  };
}

/**
 * The three standard headers (the simulator's fractional `-Exact` Reset preferred). Null when
 * none of them is present (a load balancer's 5xx); otherwise every present value is used and
 * a bad or missing one is replaced by the safe value, with `suspect` saying which.
 */
export function readRateLimitHeaders(get: HeaderGet): RateLimitInfo | null {
  const limit = readNumber(get, 'x-ratelimit-limit');
  const remaining = readNumber(get, 'x-ratelimit-remaining');
  const exact = readNumber(get, 'x-ratelimit-reset-exact');
  const whole = readNumber(get, 'x-ratelimit-reset');
  const reset = exact.value !== null ? exact : whole;
  const present = [limit, remaining, exact, whole].some((h) => h.value !== null || h.bad !== null);
  if (!present) return null;
  const notes: string[] = [];
  const bad = [limit.bad, remaining.bad, exact.value === null ? exact.bad : null, reset.bad].filter(
    (b): b is string => b !== null,
  );
  if (bad.length > 0) notes.push(`unreadable ${bad.join(', ')}`);
  const missing = [
    limit.value === null && limit.bad === null ? 'X-RateLimit-Limit' : null,
    remaining.value === null && remaining.bad === null ? 'X-RateLimit-Remaining' : null,
    reset.value === null && reset.bad === null ? 'X-RateLimit-Reset' : null,
  ].filter((m): m is string => m !== null);
  if (missing.length > 0) notes.push(`missing ${missing.join(', ')}`);
  let resetSeconds = reset.value ?? MAX_WAIT_SECONDS;
  const capped = capWaitSeconds(resetSeconds, 'X-RateLimit-Reset');
  if (capped.note) notes.push(capped.note);
  resetSeconds = capped.seconds;
  // Remaining above Limit is as unreadable as a negative one: trust neither.
  const contradictory = limit.value !== null && remaining.value !== null && remaining.value > limit.value;
  if (contradictory)
    notes.push(`X-RateLimit-Remaining ${remaining.value} above X-RateLimit-Limit ${limit.value}`);
  const info: RateLimitInfo = {
    limit: limit.value ?? remaining.value ?? 0,
    remaining: contradictory ? 0 : (remaining.value ?? 0),
    resetSeconds,
  };
  if (notes.length > 0)
    info.suspect = `${notes.join('; ')}: taken as ${info.remaining} left, reset in ${resetSeconds} s`;
  return info;
}

/**
 * Retry-After as seconds from `nowMs` (the simulator's `-Exact` first), capped; an HTTP date
 * counts from `nowMs` (a date in the past is 0). Null when absent or unreadable.
 */
export function readRetryAfter(
  get: HeaderGet,
  nowMs: number,
): { seconds: number; note: string | null } | null {
  const exact = readNumber(get, 'retry-after-exact');
  if (exact.value !== null) return capWaitSeconds(exact.value, 'Retry-After');
  const raw = get('retry-after');
  if (raw === null) return null;
  const text = raw.trim();
  if (NUMBER.test(text)) return capWaitSeconds(Number(text), 'Retry-After');
  // An HTTP date has a weekday and GMT (IMF-fixdate) or an obsolete form; Date.parse reads all three.
  const at = /[A-Za-z]/.test(text) ? Date.parse(text) : Number.NaN;
  if (!Number.isFinite(at)) return null;
  return capWaitSeconds(Math.max(0, (at - nowMs) / 1000), 'Retry-After (an HTTP date)');
}

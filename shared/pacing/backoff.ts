import { MAX_WAIT_SECONDS } from './rate-limit-headers.ts';

/*
 * The wait after the k-th 429 in a row. Retrying at the spacing, or at what Retry-After says,
 * never drains a window that counts refused requests (each retry is counted and keeps it full,
 * and a Reset counted from the oldest request is early there). So the wait doubles with every
 * 429 in a row, from 2 s up to MAX_WAIT_SECONDS (120 s, twice the longest window the API notes
 * report), with "equal jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): at
 * least half of the step, so from the 7th 429 in a row on every wait is at least 60 s, a full
 * window of the longest kind, and a server that counts refused requests drains. The count is
 * kept with the source (the checkpoint's last rate-limit headers, or the shared pacer's row),
 * so a resumed run keeps backing off.
 */

export const REJECTED_BACKOFF_BASE_MS = 2000;
export const REJECTED_BACKOFF_CAP_MS = MAX_WAIT_SECONDS * 1000;

/**
 * `k` >= 1: the k-th 429 in a row; `u` in [0, 1): the jitter draw; `longestWindowMs`: the
 * longest window the upstream may have (config.longestWindowMs, 60 s by the notes, time-scaled
 * in local runs): the wait doubles up to twice that, so it reaches a full window of the longest
 * kind and no further.
 */
export function rejectedBackoffMs(
  k: number,
  u: number,
  longestWindowMs = REJECTED_BACKOFF_CAP_MS / 2,
): number {
  const cap = Math.min(REJECTED_BACKOFF_CAP_MS, 2 * longestWindowMs);
  const step = Math.min(cap, REJECTED_BACKOFF_BASE_MS * 2 ** Math.max(0, Math.min(k, 30) - 1));
  const jitter = Math.min(Math.max(u, 0), 1);
  return Math.ceil(step / 2 + (step / 2) * jitter);
}

/**
 * How much earlier than it says a Reset (or Retry-After) of `ms` may name its instant: a server
 * that rounds whole units down is up to one unit early. A value that is not a whole number of
 * units was not rounded (the simulator's exact header), and needs nothing.
 */
export function roundingPadMs(ms: number, granularityMs: number): number {
  if (!(granularityMs > 0)) return 0;
  const units = Math.round(ms / granularityMs);
  return Math.abs(ms - units * granularityMs) < 0.5 ? granularityMs : 0;
}

/*
 * The live service's latency: about 3.5 to 4 s for a 5000-event page (datasync-api.md), which is
 * longer than the 2.2 s request spacing, so it decides how fast one cursor chain can go. A page
 * of n events takes n / 5000 of it: the time goes into reading and serialising the rows.
 */

/** Events in the page the latency figures are given for (the page size cap). */
export const LATENCY_PAGE_EVENTS = 5000;
/** Latency of a 5000-event page at the live service, before jitter. */
export const LIVE_LATENCY_MS = 3500;
/** The live service's spread above that: 3.5 to 4 s. */
export const LIVE_LATENCY_JITTER_MS = 500;

/**
 * The latency when the options name none: the live service's. The local run plans cursor chains
 * that overlap it (#14); `--latency-ms 0` gives an upstream that answers at once.
 */
export const DEFAULT_LATENCY: number | 'live' = 'live';

/**
 * Unscaled milliseconds before a page of `rows` events is answered: the full-page latency plus
 * `u` (in [0, 1)) of the jitter, in proportion to the rows. Answers without rows take none.
 */
export function pageLatencyMs(fullPageMs: number, jitterMs: number, rows: number, u: number): number {
  if (rows <= 0) return 0;
  return ((fullPageMs + jitterMs * u) * rows) / LATENCY_PAGE_EVENTS;
}

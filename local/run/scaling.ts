import { DEFAULT_SAFETY_MARGIN_MS } from '#shared/pacing.ts';
import type { LocalRunOptions } from './options.ts';

/** The options that decide how fast a local run's clock runs and how it paces itself. */
export type PacingOptions = Pick<
  LocalRunOptions,
  'timeScale' | 'minSpacingMs' | 'rateLimit' | 'windowSeconds' | 'latencyMs'
>;

/**
 * The fetch-page function's environment for a local run. Every duration the step waits for is
 * divided by the time scale, the way the simulator divides its windows, TTLs and latency.
 */
export function stepEnvironment(
  options: PacingOptions,
  target: { apiUrl: string; apiKey: string; databaseUrl: string; pageSize: number },
): Record<string, string> {
  const scale = options.timeScale;
  return {
    DATASYNC_API_URL: target.apiUrl,
    DATASYNC_API_KEY: target.apiKey,
    DATABASE_URL: target.databaseUrl,
    MIN_REQUEST_SPACING_MS: String(Math.ceil(options.minSpacingMs / scale)),
    // The simulator's windows shrink by timeScale: so must the margin added to its Reset,
    // or a scaled run pays 250 ms per window that a real run pays per 20-60 s.
    RATE_LIMIT_MARGIN_MS: String(Math.min(60_000, Math.ceil(DEFAULT_SAFETY_MARGIN_MS / scale))),
    // The simulator's cursors live 116 s / timeScale: an unscaled 15 s margin would refresh
    // every cursor of a scaled run, a path a real run takes only after a long pause.
    // (Clamped like the variables' own bounds: a slowed-down run, time-scale < 1, stays valid.)
    CURSOR_REFRESH_MARGIN_MS: String(Math.min(110_000, Math.ceil(15_000 / scale))),
    PAGE_SIZE: String(target.pageSize),
    RETRY_BUDGET_MS: String(Math.ceil(20_000 / Math.max(1, Math.min(scale, 20)))),
    LEASE_TTL_MS: String(Math.max(10_000, Math.ceil(180_000 / scale))),
  };
}

/**
 * Events per second the pacing allows, before any page is fetched: one page per request, one
 * request per max(minimum spacing, window / limit) plus the simulator's latency, all scaled.
 * This is what the first ETA comes from; a rate measured over the first seconds is mostly
 * start-up and gave a 37-minute ETA for a 22-minute run. null when nothing bounds the pace.
 */
export function plannedEventsPerSecond(options: PacingOptions, pageSize: number): number | null {
  const perWindow = options.rateLimit > 0 ? (options.windowSeconds * 1000) / options.rateLimit : 0;
  const perRequestMs = (Math.max(options.minSpacingMs, perWindow) + options.latencyMs) / options.timeScale;
  if (perRequestMs <= 0) return null;
  return (pageSize * 1000) / perRequestMs;
}

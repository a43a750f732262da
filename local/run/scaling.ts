import {
  configDefaults,
  type FetchPageConfig,
  MAX_CHAINS,
  parseConfig,
  timeScaledSettings,
} from '#shared/config.ts';
import { type LocalRunOptions, latencyOfPage } from './options.ts';

/** The options that decide how fast a local run's clock runs and how it paces itself. */
export type PacingOptions = Pick<
  LocalRunOptions,
  'timeScale' | 'minSpacingMs' | 'rateLimit' | 'windowSeconds' | 'latencyMs'
> &
  Partial<Pick<LocalRunOptions, 'chains' | 'maxIterations' | 'lookbackMs'>>;

/**
 * The fetch-page function's configuration for a local run: the settings' defaults from the one
 * schema, with every duration the step waits for divided by the time scale, the way the
 * simulator divides its windows, cursor lifetimes and latency (`timeScaledSettings`).
 */
export function stepConfig(
  options: PacingOptions,
  target: { apiUrl: string; apiKey: string; databaseUrl: string; pageSize: number },
): FetchPageConfig {
  const settings = timeScaledSettings(
    {
      ...configDefaults,
      minSpacingMs: options.minSpacingMs,
      pageSize: target.pageSize,
      chains: options.chains ?? configDefaults.chains,
      maxIterationsPerExecution: options.maxIterations ?? configDefaults.maxIterationsPerExecution,
    },
    options.timeScale,
  );
  // The lookback is a span of the events' own instants: no time scale applies to it.
  return parseConfig({ ...settings, lookbackMs: options.lookbackMs ?? configDefaults.lookbackMs, ...target });
}

/**
 * Events per second the pacing allows, before any page is fetched: one page per request, one
 * request per max(minimum spacing, window / limit, the simulator's latency / chains), all scaled.
 * This is what the first ETA comes from; a rate measured over the first seconds is mostly
 * start-up and gave a 37-minute ETA for a 22-minute run. null when nothing bounds the pace.
 */
export function plannedEventsPerSecond(options: PacingOptions, pageSize: number): number | null {
  const perWindow = options.rateLimit > 0 ? (options.windowSeconds * 1000) / options.rateLimit : 0;
  const latency = latencyOfPage(options.latencyMs, pageSize);
  // Several chains overlap their requests' latencies: c chains send at most c per latency.
  const intervalMs = Math.max(options.minSpacingMs, perWindow);
  const requested = options.chains ?? 'auto';
  const chains =
    requested !== 'auto'
      ? requested
      : latency > options.minSpacingMs
        ? Math.min(MAX_CHAINS, Math.ceil(latency / Math.max(intervalMs, 1)) + 1)
        : 1;
  // A chain sends its next request when the previous answer is in and the interval has passed.
  const perRequestMs = Math.max(intervalMs, latency / chains) / options.timeScale;
  if (perRequestMs <= 0) return null;
  return (pageSize * 1000) / perRequestMs;
}

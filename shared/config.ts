import { resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.ts';
import { httpUrlSchema, postgresUrlSchema } from './url.ts';

/*
 * The fetch-page function's configuration, defined once. Each setting has one schema (bounds
 * and default) and one environment variable name. The Lambda reads it from its environment
 * (`loadConfig`), the stack writes that environment from typed values (`configToEnv`), and the
 * local runner builds the typed config directly (`parseConfig`): the same schema in all three.
 */

const wholeMs = (min: number, max: number) =>
  z
    .number({ error: 'must be a whole number of milliseconds' })
    .int({ error: 'must be a whole number of milliseconds' })
    .min(min)
    .max(max);

/*
 * The bounds, each declared once here: the settings schema below, the stack's context, the
 * local runner's options and their help texts all read them from these constants.
 */

/** No more chains than the rate limit's requests per window (10 on the live service). */
export const MAX_CHAINS = 10;

/** Events per request: the API caps a page at 5000. */
export const MAX_PAGE_SIZE = 5000;

/**
 * FetchPage invocations one execution may run. One Task+Choice+Wait iteration writes about 9
 * history events and a Standard execution fails at 25,000: 2000 iterations leave about 7,000
 * events for retries, which each add events too.
 */
export const MAX_ITERATIONS_PER_EXECUTION = 2000;

/** Where the stack's bundling copies drizzle/ in the migrate function's package (its env MIGRATIONS_DIR). */
export const DEPLOYED_MIGRATIONS_DIR = '/var/task/drizzle';
/**
 * drizzle/ of this checkout, for local runs and tests. A bundle without import.meta (the
 * deployed function, which passes MIGRATIONS_DIR) falls back to the working directory.
 */
export const MIGRATIONS_DIR = import.meta.dirname
  ? resolve(import.meta.dirname, '../drizzle')
  : resolve(process.cwd(), 'drizzle');

/** The step's tunables: how it paces, retries and recovers. Defaults are the production values. */
export const stepSettingsSchema = z.object({
  /** Events per request. */
  pageSize: z
    .number({ error: 'must be a whole number' })
    .int()
    .min(1)
    .max(MAX_PAGE_SIZE)
    .default(MAX_PAGE_SIZE),
  /** Floor between two request starts, retries and cursor recovery included. */
  minSpacingMs: wholeMs(0, 600_000).default(2200),
  /** Longest a request (with its body) may take before it counts as a transient fault. */
  requestTimeoutMs: wholeMs(1000, 120_000).default(30_000),
  /** How long transient upstream faults are retried inside one invocation before the state machine's retry takes over. */
  retryBudgetMs: wholeMs(0, 300_000).default(20_000),
  /**
   * Added to every wait derived from the rate-limit headers (Reset, Retry-After): covers a
   * server that rounds Reset down and clock granularity.
   */
  safetyMarginMs: wholeMs(0, 60_000).default(250),
  /**
   * The unit the upstream rounds Reset to, in either direction (whole seconds): a Reset that is
   * a multiple of it may be this much early, and the pacer adds it (shared/pacing/).
   */
  resetGranularityMs: wholeMs(0, 60_000).default(1000),
  /**
   * The longest rate-limit window the API notes report (60 s): when failed answers spent more
   * slots than the headers named and no window is learned yet, the next request waits this long.
   */
  longestWindowMs: wholeMs(1, 3_600_000).default(60_000),
  /** A stored cursor that expires within this margin is refreshed before the request (the request itself takes seconds). */
  cursorRefreshMarginMs: wholeMs(0, 110_000).default(15_000),
  /** Lifetime given to a refreshed or rebuilt cursor; the service hands out about 116 s. */
  cursorTtlMs: wholeMs(1000, 3_600_000).default(116_000),
  /** Longest sleep the function does itself; longer waits go back to the Wait state. */
  maxInTaskSleepMs: wholeMs(0, 60_000).default(3000),
  /** Added to each wait: a lease outlives the Wait state plus one invocation. */
  leaseTtlMs: wholeMs(10_000, 3_600_000).default(180_000),
  /** Time kept back from the invocation's remaining time for normalising and writing the page. */
  writeHeadroomMs: wholeMs(0, 300_000).default(10_000),
  /** No request starts with less time than this before the headroom: a 5000-event page takes 3.5-4 s live. */
  minAttemptMs: wholeMs(100, 120_000).default(5000),
  /**
   * Cursor chains reading the source at once, each over its own range of the key space:
   * `auto` plans them from the first page (more than one only when the upstream's latency
   * exceeds the spacing, never more than the window's budget can feed), a number forces it.
   */
  chains: z
    .union([z.literal('auto'), z.number().int().min(1).max(MAX_CHAINS)], {
      error: `must be auto or a whole number from 1 to ${MAX_CHAINS}`,
    })
    .default('auto'),
  /**
   * A top-up (a complete source started again) walks newest first from page one down to the
   * high-water mark less this much, so that events that arrive late, with instants below the
   * newest one stored, are still read. At the live service's event rate (about one a second)
   * 15 minutes is under 1000 events: at most one page more than the new events need.
   */
  lookbackMs: wholeMs(0, 30 * 86_400_000).default(900_000),
  /** FetchPage invocations one execution may run before it continues as new, over all its chains. */
  maxIterationsPerExecution: z
    .number({ error: 'must be a whole number' })
    .int()
    .min(1)
    .max(MAX_ITERATIONS_PER_EXECUTION)
    .default(1000),
});
export type StepSettings = z.infer<typeof stepSettingsSchema>;

/**
 * The fetch-page function's timeout. The stack gives the function this timeout, and the local
 * runner enforces it the way Lambda does (Sandbox.Timedout), so the two behave alike.
 */
export const FETCH_PAGE_TIMEOUT_MS = 60_000;

/** Every tunable at its default: the one place the stack and the local runner take defaults from. */
export const configDefaults: Readonly<StepSettings> = Object.freeze(stepSettingsSchema.parse({}));

/**
 * TLS to PostgreSQL. `disable`; `require` (encrypted, certificate not checked); `verify-full`
 * (the certificate must chain to a trusted CA and name the host: the deployed default, against
 * DATABASE_CA_FILE, the RDS CAs shipped in the function's bundle).
 */
export const databaseSslSchema = z.enum(['disable', 'require', 'verify-full'], {
  error: 'must be disable, require or verify-full',
});
export type DatabaseSsl = z.infer<typeof databaseSslSchema>;

/** Where a function's database is: what the fetch-page, migrate and status functions share. */
const databaseFields = {
  /** A postgres:// URL: local runs only. */
  databaseUrl: postgresUrlSchema.optional(),
  /** The RDS-generated secret: deployed. */
  databaseSecretArn: z.string().min(1).optional(),
  /** Overrides the TLS mode of the URL's sslmode or of the secret (whose default is verify-full). */
  databaseSsl: databaseSslSchema.optional(),
  /**
   * A PEM file of the CAs the server's certificate must chain to (verify-full), in place of the
   * process's trust store: deployed, the RDS CA bundle shipped in the function's bundle.
   */
  databaseCaFile: z.string().min(1).optional(),
};

const DATABASE_MISSING =
  'is missing: set DATABASE_SECRET_ARN (deployed: the RDS-generated secret) or DATABASE_URL (local runs: postgres://user:pass@host:port/db)';

export const databaseConfigSchema = z.object(databaseFields).superRefine((c, ctx) => {
  if (!c.databaseUrl && !c.databaseSecretArn) {
    ctx.addIssue({ code: 'custom', path: ['databaseSecretArn'], message: DATABASE_MISSING });
  }
});
export type DatabaseConfig = z.infer<typeof databaseConfigSchema>;

const connectionSchema = z.object({
  /** The DataSync API base, e.g. https://host/api/v1. */
  apiUrl: httpUrlSchema,
  /** The API key itself: local runs only (deployed, it lives in Secrets Manager). */
  apiKey: z.string().min(1).optional(),
  apiKeySecretArn: z.string().min(1).optional(),
  ...databaseFields,
});

export const fetchPageConfigSchema = connectionSchema
  .extend(stepSettingsSchema.shape)
  .superRefine((c, ctx) => {
    if (!c.apiKey && !c.apiKeySecretArn) {
      ctx.addIssue({
        code: 'custom',
        path: ['apiKey'],
        message:
          'is missing: set DATASYNC_API_KEY_SECRET_ARN (deployed) or DATASYNC_API_KEY (local runs) to the DataSync API key',
      });
    }
    if (!c.databaseUrl && !c.databaseSecretArn) {
      ctx.addIssue({
        code: 'custom',
        path: ['databaseSecretArn'],
        message: DATABASE_MISSING,
      });
    }
  });
export type FetchPageConfig = z.infer<typeof fetchPageConfigSchema>;
export type FetchPageConfigInput = z.input<typeof fetchPageConfigSchema>;

/** The environment variable of each setting. */
export const CONFIG_ENV_NAMES = {
  apiUrl: 'DATASYNC_API_URL',
  apiKey: 'DATASYNC_API_KEY',
  apiKeySecretArn: 'DATASYNC_API_KEY_SECRET_ARN',
  databaseUrl: 'DATABASE_URL',
  databaseSecretArn: 'DATABASE_SECRET_ARN',
  databaseSsl: 'DATABASE_SSL',
  databaseCaFile: 'DATABASE_CA_FILE',
  pageSize: 'PAGE_SIZE',
  minSpacingMs: 'MIN_REQUEST_SPACING_MS',
  requestTimeoutMs: 'REQUEST_TIMEOUT_MS',
  retryBudgetMs: 'RETRY_BUDGET_MS',
  safetyMarginMs: 'RATE_LIMIT_MARGIN_MS',
  resetGranularityMs: 'RATE_LIMIT_RESET_GRANULARITY_MS',
  longestWindowMs: 'RATE_LIMIT_LONGEST_WINDOW_MS',
  cursorRefreshMarginMs: 'CURSOR_REFRESH_MARGIN_MS',
  cursorTtlMs: 'CURSOR_TTL_MS',
  maxInTaskSleepMs: 'MAX_IN_TASK_SLEEP_MS',
  leaseTtlMs: 'LEASE_TTL_MS',
  writeHeadroomMs: 'WRITE_HEADROOM_MS',
  minAttemptMs: 'MIN_ATTEMPT_MS',
  chains: 'CHAINS',
  lookbackMs: 'TOPUP_LOOKBACK_MS',
  maxIterationsPerExecution: 'MAX_ITERATIONS_PER_EXECUTION',
} as const satisfies Record<keyof FetchPageConfig, string>;

type ConfigKey = keyof typeof CONFIG_ENV_NAMES;
const CONFIG_KEYS = Object.keys(CONFIG_ENV_NAMES) as ConfigKey[];
const NUMERIC_KEYS = new Set<string>(Object.keys(stepSettingsSchema.shape));

/** Validates a typed configuration (the local runner's path); missing tunables take their defaults. */
export function parseConfig(input: FetchPageConfigInput): FetchPageConfig {
  const parsed = fetchPageConfigSchema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(`Invalid fetch-page configuration:\n${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}

/**
 * Parses the function's environment. A missing or malformed variable is a ConfigError naming
 * it, never a silent fallback; a variable that is not set takes the setting's default.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): FetchPageConfig {
  return loadFromEnv(fetchPageConfigSchema, env, 'the fetch-page function');
}

/** The database settings of the migrate and status functions, from their environment. */
export function loadDatabaseConfig(
  env: NodeJS.ProcessEnv = process.env,
  fn = 'the function',
): DatabaseConfig {
  return loadFromEnv(databaseConfigSchema, env, fn);
}

function loadFromEnv<T>(schema: z.ZodType<T>, env: NodeJS.ProcessEnv, fn: string): T {
  const candidate: Record<string, unknown> = {};
  for (const key of CONFIG_KEYS) {
    const raw = env[CONFIG_ENV_NAMES[key]];
    if (raw === undefined) continue;
    // A numeric setting given as text that is not a number stays text, so the schema names it.
    candidate[key] = NUMERIC_KEYS.has(key) && /^\s*-?\d+(\.\d+)?\s*$/.test(raw) ? Number(raw) : raw;
  }
  const parsed = schema.safeParse(candidate);
  if (!parsed.success) {
    const byEnvName = new z.ZodError(
      parsed.error.issues.map((issue) => {
        const [head, ...rest] = issue.path;
        const name =
          typeof head === 'string' && head in CONFIG_ENV_NAMES ? CONFIG_ENV_NAMES[head as ConfigKey] : head;
        return { ...issue, path: name === undefined ? [] : [name, ...rest] };
      }),
    );
    throw new ConfigError(`Invalid configuration of ${fn}:\n${z.prettifyError(byEnvName)}`);
  }
  return parsed.data;
}

/**
 * The environment that makes `loadConfig` return these settings: what the stack puts on the
 * function. Only the given settings are written; the others keep their defaults. Values may be
 * CDK tokens (a secret's ARN), which pass through as strings.
 */
export function configToEnv(config: Partial<FetchPageConfig>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of CONFIG_KEYS) {
    const value = config[key];
    if (value !== undefined) env[CONFIG_ENV_NAMES[key]] = String(value);
  }
  return env;
}

/**
 * The settings for a run against a simulator whose clock runs `timeScale` times faster: the
 * durations measured on the upstream's clock (spacing, the margins added to its windows and
 * cursor lifetimes, the lease that outlives its waits) shrink with it, clamped to their bounds.
 * The retry budget also covers real request latencies, so it shrinks at most 20 times and never
 * grows; timeouts, the write headroom and page size measure this machine and stay.
 */
export function timeScaledSettings<T extends StepSettings>(settings: T, timeScale: number): T {
  if (!(timeScale > 0) || !Number.isFinite(timeScale)) {
    throw new ConfigError(
      `timeScale ${timeScale} is not a positive number: pass the simulator's time scale, e.g. 1 or 20`,
    );
  }
  const scaled: T = { ...settings };
  const factors = {
    minSpacingMs: timeScale,
    safetyMarginMs: timeScale,
    resetGranularityMs: timeScale,
    longestWindowMs: timeScale,
    cursorRefreshMarginMs: timeScale,
    leaseTtlMs: timeScale,
    retryBudgetMs: Math.max(1, Math.min(timeScale, 20)),
  } as const;
  for (const [key, factor] of Object.entries(factors) as [keyof typeof factors, number][]) {
    const { minValue, maxValue } = stepSettingsSchema.shape[key].unwrap();
    const value = Math.ceil(settings[key] / factor);
    scaled[key] = Math.min(maxValue ?? value, Math.max(minValue ?? value, value));
  }
  return scaled;
}

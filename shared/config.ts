import { z } from 'zod';
import { ConfigError } from './errors.ts';

/**
 * The fetch-page function's configuration, parsed once from the environment. A missing or
 * malformed value is a ConfigError naming the variable: never a silent fallback.
 */
const envSchema = z.object({
  DATASYNC_API_URL: z
    .string({ error: 'is required: the API base URL, e.g. https://host/api/v1' })
    .refine((v) => isHttpUrl(v), { error: 'must be an http(s) URL such as https://host/api/v1' }),
  DATASYNC_API_KEY: z.string().min(1).optional(),
  DATASYNC_API_KEY_SECRET_ARN: z.string().min(1).optional(),
  DATABASE_URL: z
    .string()
    .refine((v) => /^postgres(ql)?:\/\//.test(v), { error: 'must be a postgres:// URL' })
    .optional(),
  DATABASE_SECRET_ARN: z.string().min(1).optional(),
  MIN_REQUEST_SPACING_MS: z.coerce
    .number({ error: 'must be a whole number of milliseconds' })
    .int()
    .min(0)
    .max(600_000)
    .default(2200),
  PAGE_SIZE: z.coerce.number({ error: 'must be a whole number' }).int().min(1).max(5000).default(5000),
  REQUEST_TIMEOUT_MS: z.coerce.number().int().min(1000).max(120_000).default(30_000),
  /** How long transient upstream faults are retried inside one invocation before the state machine's retry takes over. */
  RETRY_BUDGET_MS: z.coerce.number().int().min(0).max(300_000).default(20_000),
  /**
   * Added to every wait derived from the rate-limit headers (Reset, Retry-After): covers a
   * server that rounds Reset down and clock granularity. Time-scaled local runs scale it too.
   */
  RATE_LIMIT_MARGIN_MS: z.coerce
    .number({ error: 'must be a whole number of milliseconds' })
    .int()
    .min(0)
    .max(60_000)
    .default(250),
  /**
   * A stored cursor that expires within this margin is refreshed before the request (the
   * request itself takes seconds). Time-scaled local runs scale it, as they scale the cursor TTL.
   */
  CURSOR_REFRESH_MARGIN_MS: z.coerce
    .number({ error: 'must be a whole number of milliseconds' })
    .int()
    .min(0)
    .max(110_000)
    .default(15_000),
  /** Longest sleep the function does itself; longer waits go back to the Wait state. */
  MAX_IN_TASK_SLEEP_MS: z.coerce.number().int().min(0).max(60_000).default(3_000),
  /** Added to each wait: a lease outlives the Wait state plus one invocation. */
  LEASE_TTL_MS: z.coerce.number().int().min(10_000).max(3_600_000).default(180_000),
});

export type StepConfig = z.infer<typeof envSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): StepConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.')} ${i.message}`);
    throw new ConfigError(`Invalid configuration: ${lines.join('; ')}`);
  }
  const c = parsed.data;
  if (!c.DATASYNC_API_KEY && !c.DATASYNC_API_KEY_SECRET_ARN) {
    throw new ConfigError(
      'Invalid configuration: set DATASYNC_API_KEY_SECRET_ARN (deployed) or DATASYNC_API_KEY (local runs) to the DataSync API key',
    );
  }
  if (!c.DATABASE_URL && !c.DATABASE_SECRET_ARN) {
    throw new ConfigError(
      'Invalid configuration: set DATABASE_SECRET_ARN (deployed: the RDS-generated secret) or DATABASE_URL (local runs: postgres://user:pass@host:port/db)',
    );
  }
  return c;
}

function isHttpUrl(value: string): boolean {
  try {
    const u = new URL(value);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

import { z } from 'zod';
import { ConfigError } from '#shared/errors.ts';
import { MAX_EVENTS } from './dataset.ts';

/** Rates switched on by `chaos: true` (each can still be set explicitly). */
export const CHAOS_PROFILE = {
  malformedTimestampRate: 0.001,
  missingFieldRate: 0.001,
  duplicateRowRate: 0.02,
  transientErrorRate: 0.05,
  truncatedBodyRate: 0.01,
  epochSecondsRate: 0.001,
  controlCharRate: 0.001,
} as const;

type RateName = keyof typeof CHAOS_PROFILE;
const RATE_NAMES = Object.keys(CHAOS_PROFILE) as RateName[];

const rate = z.number().min(0).max(1);
const positive = z.number().positive();
const nonNegative = z.number().min(0);

/** Options as given: every field optional, validated; {@link resolveSimulatorOptions} fills the defaults. */
export const simulatorOptionsInputSchema = z.strictObject({
  /** 0 picks a free port. */
  port: z.number().int().min(0).max(65535).optional(),
  host: z.string().min(1).optional(),
  events: z.number().int().min(1).max(MAX_EVENTS).optional(),
  seed: z.number().int().min(0).max(0xffffffff).optional(),
  apiKey: z.string().min(1).optional(),
  /** Requests per window per API key; 0 disables the limiter (and its headers). */
  rateLimit: z.number().int().min(0).optional(),
  windowSeconds: positive.optional(),
  windowMode: z.enum(['fixed', 'sliding']).optional(),
  countRejected: z.boolean().optional(),
  timeScale: positive.optional(),
  cursorTtlSeconds: positive.optional(),
  cacheTtlSeconds: nonNegative.optional(),
  latencyMs: nonNegative.optional(),
  latencyJitterMs: nonNegative.optional(),
  chaos: z.boolean().optional(),
  rejectRefreshedCursors: z.boolean().optional(),
  malformedTimestampRate: rate.optional(),
  missingFieldRate: rate.optional(),
  duplicateRowRate: rate.optional(),
  transientErrorRate: rate.optional(),
  truncatedBodyRate: rate.optional(),
  epochSecondsRate: rate.optional(),
  controlCharRate: rate.optional(),
});
export type SimulatorOptionsInput = z.infer<typeof simulatorOptionsInputSchema>;

export interface SimulatorOptions {
  port: number;
  host: string;
  events: number;
  seed: number;
  apiKey: string;
  rateLimit: number;
  windowSeconds: number;
  windowMode: 'fixed' | 'sliding';
  countRejected: boolean;
  timeScale: number;
  cursorTtlSeconds: number;
  cacheTtlSeconds: number;
  latencyMs: number;
  latencyJitterMs: number;
  chaos: boolean;
  rejectRefreshedCursors: boolean;
  malformedTimestampRate: number;
  missingFieldRate: number;
  duplicateRowRate: number;
  transientErrorRate: number;
  truncatedBodyRate: number;
  epochSecondsRate: number;
  controlCharRate: number;
}

export const DEFAULT_API_KEY = 'local-dev-key';

export const SIMULATOR_DEFAULTS = {
  port: 0,
  host: '127.0.0.1',
  events: 3_000_000,
  seed: 1,
  apiKey: DEFAULT_API_KEY,
  rateLimit: 10,
  windowSeconds: 20,
  windowMode: 'fixed',
  countRejected: false,
  timeScale: 1,
  cursorTtlSeconds: 116,
  cacheTtlSeconds: 30,
  latencyMs: 0,
  latencyJitterMs: 0,
  chaos: false,
  rejectRefreshedCursors: false,
} as const satisfies Omit<SimulatorOptions, RateName>;

/** Validates options and fills defaults; a rate not given is the chaos profile's when `chaos`, else 0. */
export function resolveSimulatorOptions(input: unknown): SimulatorOptions {
  const parsed = simulatorOptionsInputSchema.safeParse(input ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(
      `Simulator option ${issue.path.join('.') || '(options)'} is invalid: ${issue.message}. See local/simulator/README.md for the accepted values.`,
    );
  }
  const given = parsed.data;
  const chaos = given.chaos ?? false;
  const rates = Object.fromEntries(
    RATE_NAMES.map((name) => [name, given[name] ?? (chaos ? CHAOS_PROFILE[name] : 0)]),
  ) as Record<RateName, number>;
  const perEvent =
    rates.malformedTimestampRate + rates.missingFieldRate + rates.epochSecondsRate + rates.controlCharRate;
  if (perEvent > 1) {
    throw new ConfigError(
      `Simulator per-event fault rates add up to ${perEvent} (malformedTimestampRate + missingFieldRate + epochSecondsRate + controlCharRate): each event gets at most one fault, so keep the sum at most 1.`,
    );
  }
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  return { ...SIMULATOR_DEFAULTS, ...defined, ...rates, chaos } as SimulatorOptions;
}

const FLAGS = {
  port: 'int',
  host: 'string',
  events: 'int',
  seed: 'int',
  apiKey: 'string',
  rateLimit: 'int',
  windowSeconds: 'number',
  windowMode: 'string',
  countRejected: 'boolean',
  timeScale: 'number',
  cursorTtlSeconds: 'number',
  cacheTtlSeconds: 'number',
  latencyMs: 'number',
  latencyJitterMs: 'number',
  chaos: 'boolean',
  rejectRefreshedCursors: 'boolean',
  malformedTimestampRate: 'number',
  missingFieldRate: 'number',
  duplicateRowRate: 'number',
  transientErrorRate: 'number',
  truncatedBodyRate: 'number',
  epochSecondsRate: 'number',
  controlCharRate: 'number',
} as const satisfies Record<keyof SimulatorOptionsInput, 'int' | 'number' | 'string' | 'boolean'>;

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const BY_FLAG = new Map(Object.keys(FLAGS).map((name) => [`--${kebab(name)}`, name as keyof typeof FLAGS]));

export const SIMULATOR_USAGE = `Usage: npm run simulator -- [options]   (all options: local/simulator/README.md)
  --port N                    listen port (default 4010; 0 = a free port)
  --events N                  data set size (default 3000000)
  --seed N                    data set seed (default 1)
  --api-key KEY               accepted X-API-Key (default ${DEFAULT_API_KEY})
  --rate-limit N              requests per window per key (default 10; 0 = no limiter)
  --window-seconds S          rate-limit window (default 20)
  --window-mode fixed|sliding (default fixed)
  --count-rejected            429 answers count against the window
  --time-scale X              divide every duration by X (default 1)
  --latency-ms MS, --latency-jitter-ms MS
  --chaos                     fault profile: see README
  --reject-refreshed-cursors  refuse cursors whose exp was rewritten
  --malformed-timestamp-rate R, --missing-field-rate R, --duplicate-row-rate R,
  --transient-error-rate R, --truncated-body-rate R, --epoch-seconds-rate R, --control-char-rate R`;

/** Thrown for `--help`: the CLI prints the usage and exits 0. */
export class HelpRequested extends Error {
  override readonly name = 'HelpRequested';
}

/**
 * Parses CLI arguments (`--flag value` or `--flag=value`; booleans take no value or `=true|false`).
 * The CLI's default port is 4010. Throws {@link ConfigError} with one line naming the option.
 */
export function parseSimulatorArgs(argv: readonly string[]): SimulatorOptions {
  const input: Record<string, unknown> = { port: 4010 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') throw new HelpRequested(SIMULATOR_USAGE);
    const eq = arg.indexOf('=');
    const flag = eq === -1 ? arg : arg.slice(0, eq);
    const name = BY_FLAG.get(flag);
    if (!name) {
      throw new ConfigError(
        `Unknown option ${JSON.stringify(flag)}: run with --help for the accepted options.`,
      );
    }
    const kind = FLAGS[name];
    let raw: string | undefined = eq === -1 ? undefined : arg.slice(eq + 1);
    if (kind === 'boolean') {
      if (raw === undefined || raw === 'true') input[name] = true;
      else if (raw === 'false') input[name] = false;
      else
        throw new ConfigError(`Option ${flag} takes no value or =true/=false, got ${JSON.stringify(raw)}.`);
      continue;
    }
    if (raw === undefined) {
      raw = argv[i + 1];
      if (raw === undefined || raw.startsWith('--')) throw new ConfigError(`Option ${flag} needs a value.`);
      i++;
    }
    if (kind === 'string') {
      input[name] = raw;
      continue;
    }
    const n = raw.trim() === '' ? Number.NaN : Number(raw);
    if (!Number.isFinite(n) || (kind === 'int' && !Number.isInteger(n))) {
      throw new ConfigError(
        `Option ${flag} must be ${kind === 'int' ? 'an integer' : 'a number'}, got ${JSON.stringify(raw)}.`,
      );
    }
    input[name] = n;
  }
  try {
    return resolveSimulatorOptions(input);
  } catch (error) {
    if (error instanceof ConfigError) {
      // Name the flag the user typed rather than the option's property name.
      const m = /^Simulator option (\w+) is invalid: (.*?)\. See/.exec(error.message);
      if (m) throw new ConfigError(`Option --${kebab(m[1]!)} is invalid: ${m[2]}.`);
    }
    throw error;
  }
}

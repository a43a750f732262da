import { parseArgs } from 'node:util';
import { z } from 'zod';
import {
  configDefaults,
  MAX_CHAINS,
  MAX_ITERATIONS_PER_EXECUTION,
  stepSettingsSchema,
} from '#shared/config.ts';
import { sourceIdSchema } from '#shared/step/index.ts';
import { isHttpUrl, isPostgresUrl } from '#shared/url.ts';
import { DEFAULT_LATENCY, LIVE_LATENCY_MS } from '../simulator/index.ts';

/** A run's latency in milliseconds for a page of `pageSize` events, for planning. */
export function latencyOfPage(latencyMs: number | 'live', pageSize: number): number {
  return ((latencyMs === 'live' ? LIVE_LATENCY_MS : latencyMs) * pageSize) / 5000;
}

/** Raised for bad command-line input: the CLI prints the message alone and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

// Top-ups (#21): one block, kept apart from the rest of the options.
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `5m`, `90s`, `1h`, `250ms`, `2d`; a bare number is seconds. null when it is none of these. */
export function parseDuration(raw: string): number | null {
  const m = DURATION.exec(raw.trim());
  if (!m) return null;
  return Math.round(Number(m[1]) * (UNIT_MS[m[2] ?? 's'] ?? 1000));
}

const topUpOptionsSchema = z.object({
  /** Keep topping the source up until Ctrl-C, one top-up every `everyMs`. */
  follow: z.boolean().default(false),
  everyMs: z
    .number()
    .int()
    .min(1000, { error: '--every must be at least 1s, e.g. 5m' })
    .max(86_400_000, {
      error: '--every must be at most 24h',
    })
    .default(300_000),
  /** How far below the high-water mark a top-up reads again (the events' instants, not scaled). */
  lookbackMs: z
    .number()
    .refine((v) => stepSettingsSchema.shape.lookbackMs.safeParse(v).success, {
      error: '--lookback must be from 0 to 30d, e.g. 15m',
    })
    .default(configDefaults.lookbackMs),
  /** Simulator: events a second added above the newest, and the share of them that arrive late. */
  growRate: z
    .number()
    .min(0, { error: '--grow-rate must be from 0 to 100000 events a second' })
    .max(100_000, { error: '--grow-rate must be from 0 to 100000 events a second' })
    .default(0),
  growLateShare: z
    .number()
    .min(0, { error: '--grow-late-share is a share: pass a number from 0 to 1' })
    .max(1, { error: '--grow-late-share is a share: pass a number from 0 to 1' })
    .default(0),
});

const TOP_UP_USAGE = `Top-ups (a complete source run again reads what arrived since its high-water mark):
  --follow               keep topping up until Ctrl-C, one progress line per top-up
  --every D              between top-ups with --follow (default 5m; D: 90s, 5m, 1h, or seconds)
  --lookback D           read again down to the high-water mark less D, for late events
                         (default ${configDefaults.lookbackMs / 60_000}m; the events' instants, never time-scaled)
  --grow-rate N          simulator: add N events a second above the newest while running (default 0);
                         the growth is kept in <data-dir>/simulator-growth, so a rerun sees it too
  --grow-late-share S    simulator: share of the growth that arrives late, below the newest (default 0)`;

const TOP_UP_FLAGS = {
  follow: { type: 'boolean' },
  every: { type: 'string' },
  lookback: { type: 'string' },
  'grow-rate': { type: 'string' },
  'grow-late-share': { type: 'string' },
} as const;

function topUpCandidate(values: Record<string, string | boolean | undefined>) {
  const duration = (name: string, fallback: number): number => {
    const raw = values[name];
    if (typeof raw !== 'string') return fallback;
    const ms = parseDuration(raw);
    if (ms === null)
      throw new UsageError(`--${name} must be a duration such as 90s, 5m or 1h, got ${JSON.stringify(raw)}`);
    return ms;
  };
  const share = (name: string): number => {
    const raw = values[name];
    if (typeof raw !== 'string') return 0;
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n))
      throw new UsageError(`--${name} must be a number, got ${JSON.stringify(raw)}`);
    return n;
  };
  return {
    follow: values.follow === true,
    everyMs: duration('every', 300_000),
    lookbackMs: duration('lookback', configDefaults.lookbackMs),
    growRate: share('grow-rate'),
    growLateShare: share('grow-late-share'),
  };
}

export const localRunOptionsSchema = z.object({
  databaseUrl: z
    .string()
    .refine(isPostgresUrl, {
      error: '--database-url must be a postgres:// URL, e.g. postgres://user:pass@127.0.0.1:5432/datasync',
    })
    .nullable(),
  apiUrl: z
    .string()
    .refine(isHttpUrl, {
      error: '--api-url must be an http(s) URL of the API base, e.g. https://host/api/v1',
    })
    .nullable(),
  apiKey: z.string().min(1).nullable(),
  events: z.number().refine((v) => Number.isInteger(v) && v >= 1 && v <= 50_000_000, {
    error: (issue) => `--events must be a whole number from 1 to 50,000,000, got ${String(issue.input)}`,
  }),
  windowSeconds: z.number().positive().max(3600),
  rateLimit: z.number().int().min(0).max(100_000),
  windowMode: z.enum(['fixed', 'sliding'], {
    error: (issue) => `--window-mode must be fixed or sliding, got ${JSON.stringify(issue.input)}`,
  }),
  timeScale: z.number().positive().max(100_000),
  /** Of a 5000-event page; smaller pages in proportion. 'live': the live service's 3.5 s with jitter. */
  latencyMs: z.union([z.number().min(0).max(600_000), z.literal('live')]),
  chaos: z.boolean(),
  seed: z.number().int(),
  sourceId: z.string().refine((v) => sourceIdSchema.safeParse(v).success, {
    error: (issue) =>
      `--source must be 1-64 characters of letters, digits, ".", "_" or "-", starting with a letter or digit, got ${JSON.stringify(issue.input)}`,
  }),
  reset: z.boolean(),
  json: z.boolean(),
  /** Continue as a new execution after this many iterations. */
  maxIterations: stepSettingsSchema.shape.maxIterationsPerExecution.unwrap(),
  /** Cursor chains: auto (more than one only when the latency exceeds the spacing) or 1 to MAX_CHAINS. */
  chains: stepSettingsSchema.shape.chains.unwrap(),
  minSpacingMs: stepSettingsSchema.shape.minSpacingMs.unwrap(),
  dataDir: z.string().min(1),
  progress: z.enum(['auto', 'tty', 'lines', 'none'], {
    error: (issue) => `--progress must be auto, tty, lines or none, got ${JSON.stringify(issue.input)}`,
  }),
  ...topUpOptionsSchema.shape,
});
export type LocalRunOptions = z.infer<typeof localRunOptionsSchema>;

export const USAGE = `Usage: npm run local -- [options]

Runs the synthesized state machine in-process against PostgreSQL and the DataSync API.

Upstream (default: the bundled simulator, started in-process):
  --api-url URL          a real DataSync API base, e.g. https://host/api/v1 (or DATASYNC_API_URL)
  --api-key KEY          its API key (or DATASYNC_API_KEY)
  --events N             simulator data set size (default 3000000)
  --window-seconds S     simulator rate-limit window (default 20)
  --rate-limit R         simulator requests per window (default 10; 0 = unlimited)
  --window-mode M        fixed | sliding (default fixed)
  --latency-ms MS|live   simulator latency of a 5000-event page, smaller pages in proportion
                         (default live: 3500 ms plus up to 500 of jitter, as the live service; 0: none)
  --time-scale X         divide every duration (simulator window, TTL, latency; Wait states; spacing) by X
  --chaos                simulator fault profile (malformed rows, duplicates, 5xx, truncated bodies)
  --seed N               simulator data set seed (default 1)
Database (default: an embedded PostgreSQL in <data-dir>/postgres, kept between runs):
  --database-url URL     use this PostgreSQL instead (or DATABASE_URL)
  --data-dir DIR         where the embedded PostgreSQL and the logs live (default .local; about 1.1 GB
                         after a full run; delete the folder to start over; \`npm run local:db\` opens it)
Run:
  --source S             source id (default "default")
  --reset                delete the source's rows and checkpoint first (asks nothing)
  --max-iterations N     continue as a new execution after N pages over all chains (default ${configDefaults.maxIterationsPerExecution}, at most ${MAX_ITERATIONS_PER_EXECUTION})
  --chains N|auto        cursor chains reading the source at once, each over its own range (default auto:
                         more than one only when the upstream's latency exceeds the spacing)
  --min-spacing-ms MS    minimum spacing between requests before scaling (default 2200)
  --json                 print one JSON summary as the last line
  --progress MODE        auto | tty | lines | none (default auto: a bar on a terminal, lines otherwise)
  --help                 this text
${TOP_UP_USAGE}`;

/**
 * `--events -5` is read by parseArgs as an option named -5 ("ambiguous"); joined as `--events=-5`
 * it reaches the validation, which says what the value must be.
 */
function joinNegativeValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const next = argv[i + 1];
    if (/^--[a-z-]+$/.test(a) && next !== undefined && /^-\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/** Each numeric option: whole or decimal, and its bounds (the schema's, said once for the message). */
const NUMBER_RULES = {
  events: { whole: true, min: 1, max: 50_000_000 },
  'window-seconds': { whole: false, above: 0, max: 3600 },
  'rate-limit': { whole: true, min: 0, max: 100_000 },
  'time-scale': { whole: false, above: 0, max: 100_000 },
  'latency-ms': { whole: false, min: 0, max: 600_000, also: 'live' },
  seed: { whole: true, min: 0, max: 0xffff_ffff },
  'max-iterations': { whole: true, min: 1, max: MAX_ITERATIONS_PER_EXECUTION },
  chains: { whole: true, min: 1, max: MAX_CHAINS, also: 'auto' },
  'min-spacing-ms': { whole: true, min: 0, max: 600_000 },
} as const satisfies Record<
  string,
  { whole: boolean; min?: number; above?: number; max: number; also?: string }
>;
type NumericOption = keyof typeof NUMBER_RULES;

/**
 * Decimal digits only: `Number()` would read `0x10` as 16, `1e3` as 1000 and `" 5 "` as 5, so a
 * typo became another data set (`--events 0x10` once started a 3,000,000-event source over).
 */
export function parseNumber(name: NumericOption, raw: string): number {
  const rule: { whole: boolean; min?: number; above?: number; max: number; also?: string } =
    NUMBER_RULES[name];
  const pattern = rule.whole ? /^-?\d+$/ : /^-?\d+(\.\d+)?$/;
  const n = Number(raw);
  const inBounds =
    (rule.min === undefined || n >= rule.min) &&
    (rule.above === undefined || n > rule.above) &&
    n <= rule.max;
  if (pattern.test(raw) && inBounds) return n;
  const f = (v: number) => v.toLocaleString('en-US');
  const what = rule.whole ? 'a whole number' : 'a number';
  const range =
    rule.above !== undefined
      ? `above ${f(rule.above)} and at most ${f(rule.max)}`
      : `from ${f(rule.min ?? 0)} to ${f(rule.max)}`;
  const also = rule.also ? ` or ${rule.also}` : '';
  const digits = rule.whole ? 'decimal digits' : 'decimal digits, e.g. 50 or 0.5';
  throw new UsageError(`--${name} must be ${what} ${range}${also} (${digits}), got ${JSON.stringify(raw)}`);
}

/** The main job's simulator: `npm run local` with no options. */
const MAIN_JOB = {
  events: 3_000_000,
  seed: 1,
  chaos: false,
  timeScale: 1,
  windowSeconds: 20,
  rateLimit: 10,
  windowMode: 'fixed',
  latencyMs: DEFAULT_LATENCY,
  chains: 'auto',
} as const;

/**
 * The source of a simulator run without --source: "default" for the main job, else a name made
 * of what differs from it (`sim-100000`, `sim-100000-chaos`, `sim-3000000-x50`), so each quick
 * variant has a source of its own and never touches the main job's.
 */
export function variantSourceId(o: {
  events: number;
  seed: number;
  chaos: boolean;
  timeScale: number;
  windowSeconds: number;
  rateLimit: number;
  windowMode: string;
  latencyMs: number | 'live';
  chains: number | 'auto';
}): string {
  const parts: string[] = [];
  if (o.seed !== MAIN_JOB.seed) parts.push(`seed${o.seed}`);
  if (o.chaos) parts.push('chaos');
  if (o.timeScale !== MAIN_JOB.timeScale) parts.push(`x${o.timeScale}`);
  if (o.rateLimit !== MAIN_JOB.rateLimit) parts.push(`rl${o.rateLimit}`);
  if (o.windowSeconds !== MAIN_JOB.windowSeconds) parts.push(`w${o.windowSeconds}`);
  if (o.windowMode !== MAIN_JOB.windowMode) parts.push(o.windowMode);
  if (o.latencyMs !== MAIN_JOB.latencyMs) parts.push(`latency${o.latencyMs}`);
  if (o.chains !== MAIN_JOB.chains) parts.push(`chains${o.chains}`);
  if (o.events === MAIN_JOB.events && parts.length === 0) return 'default';
  return [`sim-${o.events}`, ...parts].join('-').slice(0, 64);
}

/**
 * The deployed function's settings that the local run takes as options instead (or not at all).
 * Set in the shell they used to be ignored without a word; now the run says which option to use.
 */
const FUNCTION_ONLY_ENV: Record<string, string> = {
  PAGE_SIZE: 'the local run always asks for 5000-event pages',
  CHAINS: 'use --chains',
  MIN_REQUEST_SPACING_MS: 'use --min-spacing-ms',
  MAX_ITERATIONS_PER_EXECUTION: 'use --max-iterations',
  DATABASE_SSL: 'put sslmode=disable|require|verify-full in --database-url instead',
  DATABASE_SECRET_ARN: 'use --database-url',
  DATASYNC_API_KEY_SECRET_ARN: 'use --api-key or DATASYNC_API_KEY',
  REQUEST_TIMEOUT_MS: 'the local run keeps the default',
  RETRY_BUDGET_MS: 'the local run keeps the default',
  RATE_LIMIT_MARGIN_MS: 'the local run keeps the default',
  CURSOR_REFRESH_MARGIN_MS: 'the local run keeps the default',
  CURSOR_TTL_MS: 'the local run keeps the default',
  MAX_IN_TASK_SLEEP_MS: 'the local run keeps the default',
  LEASE_TTL_MS: 'the local run keeps the default',
  WRITE_HEADROOM_MS: 'the local run keeps the default',
  MIN_ATTEMPT_MS: 'the local run keeps the default',
};

function refuseFunctionOnlyEnv(env: NodeJS.ProcessEnv): void {
  const set = Object.keys(FUNCTION_ONLY_ENV).filter((name) => env[name] !== undefined && env[name] !== '');
  if (set.length === 0) return;
  const name = set[0] as string;
  throw new UsageError(
    `${set.join(', ')} ${set.length > 1 ? 'are settings' : 'is a setting'} of the deployed function (docs/configuration.md), ` +
      `which npm run local does not read: unset ${set.length > 1 ? 'them' : 'it'} (for ${name}: ${FUNCTION_ONLY_ENV[name]})`,
  );
}

/**
 * A single-host postgres:// URL must parse as a URL (postgres.js would throw a bare "Invalid URL"
 * at connect); a multi-host one (h1:5432,h2:5432) is the driver's to read.
 */
function parsesAsPostgresUrl(url: string): boolean {
  const authority = url.replace(/^postgres(ql)?:\/\//, '').split(/[/?#]/, 1)[0] ?? '';
  if (authority.slice(authority.lastIndexOf('@') + 1).includes(',')) return true;
  try {
    const u = new URL(url);
    return u.hostname.length > 0 && (u.port === '' || (Number(u.port) >= 1 && Number(u.port) <= 65_535));
  } catch {
    return false;
  }
}

/** A URL as it may be printed: user kept, password replaced. Text that does not parse is cut to its scheme. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*:[^@/]*@/, '//***:***@');
  }
}

export function parseLocalRunArgs(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): LocalRunOptions | 'help' {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: joinNegativeValues(argv),
      strict: true,
      allowPositionals: false,
      options: {
        'database-url': { type: 'string' },
        'api-url': { type: 'string' },
        'api-key': { type: 'string' },
        events: { type: 'string' },
        'window-seconds': { type: 'string' },
        'rate-limit': { type: 'string' },
        'window-mode': { type: 'string' },
        'time-scale': { type: 'string' },
        'latency-ms': { type: 'string' },
        chaos: { type: 'boolean' },
        seed: { type: 'string' },
        source: { type: 'string' },
        reset: { type: 'boolean' },
        json: { type: 'boolean' },
        'max-iterations': { type: 'string' },
        'min-spacing-ms': { type: 'string' },
        chains: { type: 'string' },
        'data-dir': { type: 'string' },
        progress: { type: 'string' },
        ...TOP_UP_FLAGS,
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. Run \`npm run local -- --help\` for the options.`);
  }
  if (values.help) return 'help';

  const num = (name: NumericOption, fallback: number): number => {
    const raw = values[name];
    return raw === undefined ? fallback : parseNumber(name, String(raw));
  };
  const str = (name: string): string | null =>
    typeof values[name] === 'string' ? (values[name] as string) : null;

  refuseFunctionOnlyEnv(env);
  const apiUrl = str('api-url') ?? env.DATASYNC_API_URL ?? null;
  const apiKey = str('api-key') ?? env.DATASYNC_API_KEY ?? null;
  if (apiUrl && !apiKey) throw new UsageError('--api-url needs --api-key (or DATASYNC_API_KEY) as well');
  const databaseUrl = str('database-url') ?? env.DATABASE_URL ?? null;
  // A value from the environment is reported as the variable it came from, never as a flag.
  const from = (flag: string, envName: string) => (str(flag) !== null ? `--${flag}` : envName);
  if (databaseUrl !== null && !isPostgresUrl(databaseUrl)) {
    throw new UsageError(
      `${from('database-url', 'DATABASE_URL')} must be a postgres:// URL, e.g. postgres://user:pass@127.0.0.1:5432/datasync; got ${JSON.stringify(maskUrl(databaseUrl))}`,
    );
  }
  if (databaseUrl !== null && !parsesAsPostgresUrl(databaseUrl)) {
    throw new UsageError(
      `${from('database-url', 'DATABASE_URL')} does not parse as a URL (host, port 1-65535, user, database): ` +
        `got ${JSON.stringify(maskUrl(databaseUrl))}; write it as postgres://user:pass@127.0.0.1:5432/datasync ` +
        '(percent-encode a password holding @, : or /)',
    );
  }
  if (apiUrl !== null && !isHttpUrl(apiUrl)) {
    throw new UsageError(
      `${from('api-url', 'DATASYNC_API_URL')} must be an http(s) URL of the API base, e.g. https://host/api/v1; got ${JSON.stringify(maskUrl(apiUrl))}`,
    );
  }

  const latencyText = str('latency-ms');
  const chainsText = str('chains');
  const candidate = {
    databaseUrl,
    apiUrl,
    apiKey,
    events: num('events', 3_000_000),
    windowSeconds: num('window-seconds', 20),
    rateLimit: num('rate-limit', 10),
    windowMode: str('window-mode') ?? 'fixed',
    timeScale: num('time-scale', 1),
    // Absent: the simulator's own default, so that flipping it there flips local runs too.
    latencyMs:
      latencyText === 'live' ? 'live' : latencyText === null ? DEFAULT_LATENCY : num('latency-ms', 0),
    chaos: values.chaos === true,
    seed: num('seed', 1),
    sourceId: str('source') ?? 'default',
    reset: values.reset === true,
    json: values.json === true,
    maxIterations: num('max-iterations', configDefaults.maxIterationsPerExecution),
    chains: chainsText === 'auto' || chainsText === null ? ('auto' as const) : num('chains', 1),
    minSpacingMs: num('min-spacing-ms', configDefaults.minSpacingMs),
    dataDir: str('data-dir') ?? '.local',
    progress: str('progress') ?? 'auto',
    ...topUpCandidate(values),
  };
  // A quick variant of the simulator (another data set, another pace) gets a source of its own,
  // named after it, so that it never resumes, refuses or touches the main job's source.
  if (str('source') === null && apiUrl === null) candidate.sourceId = variantSourceId(candidate);
  const parsed = localRunOptionsSchema.safeParse(candidate);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = String(issue?.path[0] ?? '');
    const flag = `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    const message = issue?.message ?? 'invalid';
    throw new UsageError(message.startsWith('--') ? message : `${flag}: ${message}`);
  }
  if (parsed.data.apiUrl && parsed.data.timeScale !== 1) {
    // Scaling would shorten our waits and margins but not the real server's windows: 429s.
    throw new UsageError(
      '--time-scale applies to the bundled simulator only; drop it with --api-url (the real API keeps real time)',
    );
  }
  return parsed.data;
}

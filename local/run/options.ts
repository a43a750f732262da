import { parseArgs } from 'node:util';
import { z } from 'zod';
import { configDefaults, MAX_ITERATIONS_PER_EXECUTION, stepSettingsSchema } from '#shared/config.ts';
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
  windowMode: z.enum(['fixed', 'sliding']),
  timeScale: z.number().positive().max(100_000),
  /** Of a 5000-event page; smaller pages in proportion. 'live': the live service's 3.5 s with jitter. */
  latencyMs: z.union([z.number().min(0).max(600_000), z.literal('live')]),
  chaos: z.boolean(),
  seed: z.number().int(),
  sourceId: sourceIdSchema,
  reset: z.boolean(),
  json: z.boolean(),
  /** Continue as a new execution after this many iterations. */
  maxIterations: stepSettingsSchema.shape.maxIterationsPerExecution.unwrap(),
  /** Cursor chains: auto (more than one only when the latency exceeds the spacing) or 1 to MAX_CHAINS. */
  chains: stepSettingsSchema.shape.chains.unwrap(),
  minSpacingMs: stepSettingsSchema.shape.minSpacingMs.unwrap(),
  dataDir: z.string().min(1),
  progress: z.enum(['auto', 'tty', 'lines', 'none']),
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

  const num = (name: string, fallback: number): number => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(n)) {
      throw new UsageError(`--${name} must be a number, got ${JSON.stringify(raw)}`);
    }
    return n;
  };
  const str = (name: string): string | null =>
    typeof values[name] === 'string' ? (values[name] as string) : null;

  const apiUrl = str('api-url') ?? env.DATASYNC_API_URL ?? null;
  const apiKey = str('api-key') ?? env.DATASYNC_API_KEY ?? null;
  if (apiUrl && !apiKey) throw new UsageError('--api-url needs --api-key (or DATASYNC_API_KEY) as well');

  const candidate = {
    databaseUrl: str('database-url') ?? env.DATABASE_URL ?? null,
    apiUrl,
    apiKey,
    events: num('events', 3_000_000),
    windowSeconds: num('window-seconds', 20),
    rateLimit: num('rate-limit', 10),
    windowMode: str('window-mode') ?? 'fixed',
    timeScale: num('time-scale', 1),
    // Absent: the simulator's own default, so that flipping it there flips local runs too.
    latencyMs:
      str('latency-ms') === 'live'
        ? 'live'
        : str('latency-ms') === null
          ? DEFAULT_LATENCY
          : num('latency-ms', 0),
    chaos: values.chaos === true,
    seed: num('seed', 1),
    sourceId: str('source') ?? 'default',
    reset: values.reset === true,
    json: values.json === true,
    maxIterations: num('max-iterations', configDefaults.maxIterationsPerExecution),
    chains: str('chains') === 'auto' || str('chains') === null ? 'auto' : num('chains', 1),
    minSpacingMs: num('min-spacing-ms', configDefaults.minSpacingMs),
    dataDir: str('data-dir') ?? '.local',
    progress: str('progress') ?? 'auto',
    ...topUpCandidate(values),
  };
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

import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError } from '#shared/errors.ts';
import { BUILT_CURSOR_MODES, type BuiltCursorMode } from './cursor-position.ts';
import { MAX_EVENTS } from './dataset.ts';
import { FAMILY, FAMILY_NAMES, type FamilyName } from './family.ts';
import { DEFAULT_LATENCY, LIVE_LATENCY_JITTER_MS, LIVE_LATENCY_MS } from './latency.ts';
import {
  RESET_BASES,
  RESET_ROUNDINGS,
  type ResetBasis,
  type ResetRounding,
  WINDOW_ALIGNS,
  type WindowAlign,
} from './rate-limiter.ts';

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

/**
 * An upstream that misbehaves on purpose (issue: a hostile upstream). Never part of the chaos
 * profile: each is switched on by itself. Per event: deepProperties, unexactNumber, unknownType
 * (all rejects). Per cursor position: backCursor, sidewaysCursor, emptyPage (the stream does not
 * move strictly down), conflictingDuplicate (an id sent again with other content). Per request:
 * oversizeBody, endlessBody, hostileError.
 */
export const HOSTILE_RATES = [
  'deepPropertiesRate',
  'unexactNumberRate',
  'unknownTypeRate',
  'backCursorRate',
  'sidewaysCursorRate',
  'emptyPageRate',
  'conflictingDuplicateRate',
  'oversizeBodyRate',
  'endlessBodyRate',
  'hostileErrorRate',
] as const;
type HostileRateName = (typeof HOSTILE_RATES)[number];
/** The size an oversize page is padded to by default: the 200 MB page of the issue. */
export const DEFAULT_OVERSIZE_BODY_BYTES = 200 * 1024 * 1024;

type RateName = keyof typeof CHAOS_PROFILE;
const RATE_NAMES = Object.keys(CHAOS_PROFILE) as RateName[];

// Each message says what to pass instead: the CLI prefixes it with the flag, the API with the property.
const rate = z
  .number()
  .min(0, { error: 'a rate is a probability: pass a number from 0 to 1' })
  .max(1, { error: 'a rate is a probability: pass a number from 0 to 1' });
const positive = z.number().positive({ error: 'pass a number above 0' });
const nonNegative = z.number().min(0, { error: 'pass 0 or more' });
const boundedInt = (min: number, max: number) =>
  z
    .number()
    .int({ error: `pass a whole number from ${min} to ${max}` })
    .min(min, { error: `pass a whole number from ${min} to ${max}` })
    .max(max, { error: `pass a whole number from ${min} to ${max}` });

/** Options as given: every field optional, validated; {@link resolveSimulatorOptions} fills the defaults. */
export const simulatorOptionsInputSchema = z.strictObject({
  /** 0 picks a free port. */
  port: boundedInt(0, 65535).optional(),
  host: z.string().min(1, { error: 'pass a host name or address, e.g. 127.0.0.1' }).optional(),
  events: boundedInt(1, MAX_EVENTS).optional(),
  seed: boundedInt(0, 0xffffffff).optional(),
  apiKey: z.string().min(1, { error: 'pass a non-empty key' }).optional(),
  /** Requests per window per API key; 0 disables the limiter (and its headers). */
  rateLimit: boundedInt(0, 1_000_000).optional(),
  windowSeconds: positive.optional(),
  windowMode: z.enum(['fixed', 'sliding'], { error: 'pass fixed or sliding' }).optional(),
  countRejected: z.boolean().optional(),
  /** What X-RateLimit-Reset counts to (rate-limiter.ts). */
  resetBasis: z.enum(RESET_BASES, { error: `pass one of ${RESET_BASES.join(', ')}` }).optional(),
  resetRounding: z.enum(RESET_ROUNDINGS, { error: `pass one of ${RESET_ROUNDINGS.join(', ')}` }).optional(),
  windowAlign: z.enum(WINDOW_ALIGNS, { error: `pass one of ${WINDOW_ALIGNS.join(', ')}` }).optional(),
  /** 5xx answers and 404 lookups do NOT count against the window (by default they do). */
  uncountedErrors: z.boolean().optional(),
  /** The load balancer's 5xx answers carry the rate-limit headers. */
  errorHeaders: z.boolean().optional(),
  /** A named reading of the rate limit and latency (family.ts); explicit options win over it. */
  family: z.enum(FAMILY_NAMES, { error: `pass one of ${FAMILY_NAMES.join(', ')}` }).optional(),
  timeScale: positive.optional(),
  cursorTtlSeconds: positive.optional(),
  cacheTtlSeconds: nonNegative.optional(),
  /** Latency of a 5000-event page (smaller pages take their share); 'live' = the live service's figures. */
  latencyMs: z
    .union([nonNegative, z.literal('live')], { error: 'pass 0 or more milliseconds, or live' })
    .optional(),
  /** Up to this much more for a 5000-event page; defaults to the live spread with latencyMs 'live', else 0. */
  latencyJitterMs: nonNegative.optional(),
  /** Share of answers in the slow tail: a 5000-event page takes `latencyTailMs` instead. */
  latencyTailRate: rate.optional(),
  latencyTailMs: nonNegative.optional(),
  /** Share of the events bunched into `skewBursts` short intervals; 0 spreads them evenly. */
  timestampSkew: z
    .number()
    .min(0, { error: 'pass a share from 0 (even) to below 1, e.g. 0.9' })
    .lt(1, { error: 'pass a share from 0 (even) to below 1, e.g. 0.9' })
    .optional(),
  skewBursts: boundedInt(1, 100).optional(),
  chaos: z.boolean().optional(),
  rejectRefreshedCursors: z.boolean().optional(),
  /** How a cursor whose id names no event at its ts (one a client built) is read. */
  builtCursors: z
    .enum(BUILT_CURSOR_MODES, { error: `pass one of ${BUILT_CURSOR_MODES.join(', ')}` })
    .optional(),
  malformedTimestampRate: rate.optional(),
  missingFieldRate: rate.optional(),
  duplicateRowRate: rate.optional(),
  transientErrorRate: rate.optional(),
  truncatedBodyRate: rate.optional(),
  epochSecondsRate: rate.optional(),
  controlCharRate: rate.optional(),
  ...(Object.fromEntries(HOSTILE_RATES.map((name) => [name, rate.optional()])) as Record<
    HostileRateName,
    z.ZodOptional<typeof rate>
  >),
  /** Bytes an oversizeBody page is padded to (with whitespace, so it stays valid JSON). */
  oversizeBodyBytes: boundedInt(1, 4 * 1024 * 1024 * 1024).optional(),
  // Growth (growth.ts): events arriving while the simulator runs.
  /** Events added per second (the client's seconds) above the newest; 0 = the data set stays as it is. */
  growRate: z.number().min(0, { error: 'pass 0 or more events per second' }).max(100_000).optional(),
  /** Share of the growth that arrives late, with instants up to growLateSeconds below the newest. */
  growLateShare: rate.optional(),
  /** Share of the growth that arrives later still, between growLateSeconds and twice that below the newest. */
  growBeyondShare: rate.optional(),
  /** How far below the newest a late event lands (default 600: inside the pipeline's 15-minute lookback). */
  growLateSeconds: positive.optional(),
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
  resetBasis: ResetBasis;
  resetRounding: ResetRounding;
  windowAlign: WindowAlign;
  uncountedErrors: boolean;
  errorHeaders: boolean;
  family: FamilyName;
  timeScale: number;
  cursorTtlSeconds: number;
  cacheTtlSeconds: number;
  latencyMs: number;
  latencyJitterMs: number;
  latencyTailRate: number;
  latencyTailMs: number;
  timestampSkew: number;
  skewBursts: number;
  chaos: boolean;
  rejectRefreshedCursors: boolean;
  builtCursors: BuiltCursorMode;
  malformedTimestampRate: number;
  missingFieldRate: number;
  duplicateRowRate: number;
  transientErrorRate: number;
  truncatedBodyRate: number;
  epochSecondsRate: number;
  controlCharRate: number;
  deepPropertiesRate: number;
  unexactNumberRate: number;
  unknownTypeRate: number;
  backCursorRate: number;
  sidewaysCursorRate: number;
  emptyPageRate: number;
  conflictingDuplicateRate: number;
  oversizeBodyRate: number;
  endlessBodyRate: number;
  hostileErrorRate: number;
  oversizeBodyBytes: number;
  growRate: number;
  growLateShare: number;
  growBeyondShare: number;
  growLateSeconds: number;
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
  resetBasis: 'window-start',
  resetRounding: 'exact',
  windowAlign: 'first-request',
  uncountedErrors: false,
  errorHeaders: false,
  family: 'default',
  timeScale: 1,
  cursorTtlSeconds: 116,
  cacheTtlSeconds: 30,
  latencyMs: DEFAULT_LATENCY === 'live' ? LIVE_LATENCY_MS : DEFAULT_LATENCY,
  latencyJitterMs: DEFAULT_LATENCY === 'live' ? LIVE_LATENCY_JITTER_MS : 0,
  latencyTailRate: 0,
  latencyTailMs: 8000,
  timestampSkew: 0,
  skewBursts: 3,
  chaos: false,
  rejectRefreshedCursors: false,
  builtCursors: 'by-ts',
  ...(Object.fromEntries(HOSTILE_RATES.map((name) => [name, 0])) as Record<HostileRateName, 0>),
  oversizeBodyBytes: DEFAULT_OVERSIZE_BODY_BYTES,
  growRate: 0,
  growLateShare: 0,
  growBeyondShare: 0,
  growLateSeconds: 600,
} as const satisfies Omit<SimulatorOptions, RateName>;

/** Validates options and fills defaults; a rate not given is the chaos profile's when `chaos`, else 0. */
export function resolveSimulatorOptions(input: unknown): SimulatorOptions {
  const parsed = simulatorOptionsInputSchema.safeParse(input ?? {});
  if (!parsed.success) {
    throw new ConfigError(
      `Simulator options are invalid (accepted values: local/simulator/README.md):\n${z.prettifyError(parsed.error)}`,
    );
  }
  // A family member's settings sit between the defaults and what was given explicitly.
  const given = { ...FAMILY[parsed.data.family ?? 'default'].options, ...parsed.data };
  const chaos = given.chaos ?? false;
  const rates = Object.fromEntries(
    RATE_NAMES.map((name) => [name, given[name] ?? (chaos ? CHAOS_PROFILE[name] : 0)]),
  ) as Record<RateName, number>;
  const perEvent =
    rates.malformedTimestampRate +
    rates.missingFieldRate +
    rates.epochSecondsRate +
    rates.controlCharRate +
    (given.deepPropertiesRate ?? 0) +
    (given.unexactNumberRate ?? 0) +
    (given.unknownTypeRate ?? 0);
  if (perEvent > 1) {
    throw new ConfigError(
      `Simulator per-event fault rates add up to ${perEvent} (malformedTimestampRate + missingFieldRate + epochSecondsRate + controlCharRate + deepPropertiesRate + unexactNumberRate + unknownTypeRate): each event gets at most one fault, so keep the sum at most 1.`,
    );
  }
  const lateShares = (given.growLateShare ?? 0) + (given.growBeyondShare ?? 0);
  if (lateShares > 1) {
    throw new ConfigError(
      `Simulator growLateShare + growBeyondShare add up to ${lateShares}: they are shares of one growth, so keep the sum at most 1.`,
    );
  }
  const latency = given.latencyMs ?? DEFAULT_LATENCY;
  const latencyMs = latency === 'live' ? LIVE_LATENCY_MS : latency;
  const latencyJitterMs = given.latencyJitterMs ?? (latency === 'live' ? LIVE_LATENCY_JITTER_MS : 0);
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  return {
    ...SIMULATOR_DEFAULTS,
    ...defined,
    ...rates,
    chaos,
    latencyMs,
    latencyJitterMs,
  } as SimulatorOptions;
}

/** `latency` is a number or the word `live`. */
type FlagKind = 'int' | 'number' | 'latency' | 'string' | 'boolean';

/** Every CLI option: its kind, its value's name in the usage, and what it does. */
const FLAGS: Record<keyof SimulatorOptionsInput, { kind: FlagKind; arg?: string; help: string }> = {
  port: { kind: 'int', arg: 'N', help: 'listen port (default 4010; 0 = a free port)' },
  host: { kind: 'string', arg: 'HOST', help: `listen address (default ${SIMULATOR_DEFAULTS.host})` },
  events: { kind: 'int', arg: 'N', help: `data set size (default ${SIMULATOR_DEFAULTS.events})` },
  seed: { kind: 'int', arg: 'N', help: `data set and fault seed (default ${SIMULATOR_DEFAULTS.seed})` },
  apiKey: { kind: 'string', arg: 'KEY', help: `the accepted X-API-Key (default ${DEFAULT_API_KEY})` },
  rateLimit: {
    kind: 'int',
    arg: 'N',
    help: `requests per window per key (default ${SIMULATOR_DEFAULTS.rateLimit}; 0 = no limiter)`,
  },
  windowSeconds: {
    kind: 'number',
    arg: 'S',
    help: `rate-limit window (default ${SIMULATOR_DEFAULTS.windowSeconds})`,
  },
  windowMode: { kind: 'string', arg: 'fixed|sliding', help: 'window semantics (default fixed)' },
  countRejected: { kind: 'boolean', help: '429 answers count against the window' },
  resetBasis: {
    kind: 'string',
    arg: RESET_BASES.join('|'),
    help: 'what X-RateLimit-Reset counts to: the window end / next free slot, the oldest counted request expiring, a full window from the arrival (default window-start)',
  },
  resetRounding: {
    kind: 'string',
    arg: RESET_ROUNDINGS.join('|'),
    help: 'Reset in whole seconds rounded up or down; exact: whole seconds up, the -Exact header exact (default exact)',
  },
  windowAlign: {
    kind: 'string',
    arg: WINDOW_ALIGNS.join('|'),
    help: "a fixed window opens at the key's first request or on the clock's multiples of the window (default first-request)",
  },
  uncountedErrors: { kind: 'boolean', help: '5xx answers and 404 lookups do not count against the window' },
  errorHeaders: { kind: 'boolean', help: "the load balancer's 5xx answers carry the rate-limit headers" },
  family: {
    kind: 'string',
    arg: 'NAME',
    help: `a named reading of the rate limit (local/simulator/family.ts): ${FAMILY_NAMES.join(', ')} (default default)`,
  },
  timeScale: { kind: 'number', arg: 'X', help: 'divide every duration by X (default 1)' },
  cursorTtlSeconds: {
    kind: 'number',
    arg: 'S',
    help: `cursor lifetime (default ${SIMULATOR_DEFAULTS.cursorTtlSeconds})`,
  },
  cacheTtlSeconds: {
    kind: 'number',
    arg: 'S',
    help: `identical requests within S are cache HITs (default ${SIMULATOR_DEFAULTS.cacheTtlSeconds}; 0 = never)`,
  },
  latencyMs: {
    kind: 'latency',
    arg: 'MS|live',
    help: `latency of a 5000-event page, smaller pages in proportion (default ${DEFAULT_LATENCY}; live = ${LIVE_LATENCY_MS} + up to ${LIVE_LATENCY_JITTER_MS})`,
  },
  latencyJitterMs: {
    kind: 'number',
    arg: 'MS',
    help: 'up to MS more for a 5000-event page, from the seed (default 0, live: 500)',
  },
  latencyTailRate: {
    kind: 'number',
    arg: 'R',
    help: 'share of answers in the slow tail, e.g. 0.01 (default 0)',
  },
  latencyTailMs: {
    kind: 'number',
    arg: 'MS',
    help: 'latency of a 5000-event page in the slow tail (default 8000)',
  },
  timestampSkew: {
    kind: 'number',
    arg: 'SHARE',
    help: 'bunch this share of the events (0 to below 1) into a few short bursts (default 0: even)',
  },
  skewBursts: { kind: 'int', arg: 'N', help: 'how many bursts with --timestamp-skew (default 3)' },
  chaos: { kind: 'boolean', help: 'fault profile: the rates below at their chaos values (README)' },
  rejectRefreshedCursors: {
    kind: 'boolean',
    help: 'refuse cursors whose exp was rewritten or that were rebuilt',
  },
  builtCursors: {
    kind: 'string',
    arg: BUILT_CURSOR_MODES.join('|'),
    help: 'cursors built by a client: start at their ts (rows at ts included), strictly after (ts, id), refuse with 400 CURSOR_INVALID_FORMAT or a 502, or ignore them (page one) (default by-ts)',
  },
  malformedTimestampRate: { kind: 'number', arg: 'R', help: 'share of events with an unparseable timestamp' },
  missingFieldRate: { kind: 'number', arg: 'R', help: 'share of events missing a required field' },
  duplicateRowRate: {
    kind: 'number',
    arg: 'R',
    help: 'share of pages repeating rows from before the cursor',
  },
  transientErrorRate: { kind: 'number', arg: 'R', help: 'share of requests answered 500/502/503/504' },
  truncatedBodyRate: { kind: 'number', arg: 'R', help: 'share of pages cut short' },
  epochSecondsRate: { kind: 'number', arg: 'R', help: 'share of timestamps sent as epoch seconds' },
  controlCharRate: { kind: 'number', arg: 'R', help: 'share of timestamps wrapped in control characters' },
  deepPropertiesRate: {
    kind: 'number',
    arg: 'R',
    help: 'hostile: share of events whose properties nest 10,000 deep',
  },
  unexactNumberRate: {
    kind: 'number',
    arg: 'R',
    help: 'hostile: share of events carrying 12345678901234567890, 1e400 or 1e-400',
  },
  unknownTypeRate: { kind: 'number', arg: 'R', help: 'hostile: share of events of type hacked_type' },
  backCursorRate: {
    kind: 'number',
    arg: 'R',
    help: 'hostile: share of cursor positions whose page points back to the previous page',
  },
  sidewaysCursorRate: {
    kind: 'number',
    arg: 'R',
    help: 'hostile: share of cursor positions whose page points sideways (same instant, a higher id)',
  },
  emptyPageRate: {
    kind: 'number',
    arg: 'R',
    help: 'hostile: share of cursor positions answered by empty pages with hasMore and a new cursor, forever',
  },
  conflictingDuplicateRate: {
    kind: 'number',
    arg: 'R',
    help: "hostile: share of pages repeating an id with other content (the previous page's last row a day off, a row of their own renamed)",
  },
  oversizeBodyRate: {
    kind: 'number',
    arg: 'R',
    help: 'hostile: share of requests whose page is padded to --oversize-body-bytes',
  },
  endlessBodyRate: { kind: 'number', arg: 'R', help: 'hostile: share of requests whose body never ends' },
  hostileErrorRate: {
    kind: 'number',
    arg: 'R',
    help: 'hostile: share of requests answered 401 with a newline, ANSI colours and the key in the message',
  },
  oversizeBodyBytes: { kind: 'int', arg: 'N', help: 'size of an oversize page (default 209715200: 200 MB)' },
  growRate: {
    kind: 'number',
    arg: 'N',
    help: 'add N events a second above the newest while running (default 0; POST /__sim/grow adds some at once)',
  },
  growLateShare: {
    kind: 'number',
    arg: 'S',
    help: 'share of the growth that arrives late, up to --grow-late-seconds below the newest',
  },
  growBeyondShare: {
    kind: 'number',
    arg: 'S',
    help: 'share of the growth that arrives later still (one to two --grow-late-seconds below)',
  },
  growLateSeconds: {
    kind: 'number',
    arg: 'S',
    help: 'how far below the newest late events land (default 600)',
  },
};

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const OPTION_NAMES = Object.keys(FLAGS) as Array<keyof SimulatorOptionsInput>;

export const SIMULATOR_USAGE = [
  'Usage: npm run simulator -- [options]   (details: local/simulator/README.md)',
  ...OPTION_NAMES.map((name) => {
    const { arg, help } = FLAGS[name];
    const flag = `--${kebab(name)}${arg ? ` ${arg}` : ''}`;
    // A flag too long for the column gets a line of its own: it ran into its help text.
    return `  ${flag.length > 32 ? `${flag}\n${' '.repeat(36)}` : flag.padEnd(34)}${help}`;
  }),
  `  ${'--help, -h'.padEnd(34)}this text`,
].join('\n');

/** Thrown for `--help`: the CLI prints the usage and exits 0. */
export class HelpRequested extends Error {
  override readonly name = 'HelpRequested';
}

const HELP_HINT = 'run `npm run simulator -- --help` for the accepted options';

/** parseArgs' own messages name the option in quotes; this says what to do about it. */
function usageError(error: unknown): ConfigError {
  const e = error as { code?: string; message?: string };
  const message = e.message ?? String(error);
  const flag = /'(-[^' ]+)/.exec(message)?.[1] ?? '';
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return new ConfigError(`Unknown option ${flag}: ${HELP_HINT}.`);
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return new ConfigError(
        `Unexpected argument ${JSON.stringify(/'([^']*)'/.exec(message)?.[1] ?? '')}: every option starts with --; ${HELP_HINT}.`,
      );
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (message.includes('does not take an argument')) {
        return new ConfigError(`Option ${flag} takes no value: write ${flag} alone to switch it on.`);
      }
      if (message.includes('ambiguous')) {
        return new ConfigError(
          `Option ${flag} needs a value, and one starting with - must be attached: write ${flag}=VALUE.`,
        );
      }
      return new ConfigError(`Option ${flag} needs a value: write ${flag} VALUE or ${flag}=VALUE.`);
    default:
      return new ConfigError(`${message}: ${HELP_HINT}.`);
  }
}

/**
 * Parses CLI arguments with node:util parseArgs (`--flag value` or `--flag=value`; booleans take
 * no value). The CLI's default port is 4010. Throws {@link HelpRequested} for --help and
 * {@link ConfigError} naming the option and the fix for anything else.
 */
export function parseSimulatorArgs(argv: readonly string[]): SimulatorOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        ...Object.fromEntries(
          OPTION_NAMES.map((name) => [
            kebab(name),
            { type: FLAGS[name].kind === 'boolean' ? ('boolean' as const) : ('string' as const) },
          ]),
        ),
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw usageError(error);
  }
  if (values.help) throw new HelpRequested(SIMULATOR_USAGE);

  const input: Record<string, unknown> = { port: 4010 };
  for (const name of OPTION_NAMES) {
    const flag = kebab(name);
    const raw = values[flag];
    if (raw === undefined) continue;
    const { kind, arg } = FLAGS[name];
    if (typeof raw === 'boolean' || kind === 'string' || (kind === 'latency' && raw === 'live')) {
      input[name] = raw;
      continue;
    }
    const n = raw.trim() === '' ? Number.NaN : Number(raw);
    if (!Number.isFinite(n) || (kind === 'int' && !Number.isInteger(n))) {
      throw new ConfigError(
        `Option --${flag} must be ${kind === 'int' ? 'a whole number' : kind === 'latency' ? 'a number or live' : 'a number'}, got ${JSON.stringify(raw)}: write --${flag} ${arg}.`,
      );
    }
    input[name] = n;
  }
  const parsed = simulatorOptionsInputSchema.safeParse(input);
  if (!parsed.success) {
    // The user typed flags, not property names: name the flag in each issue.
    const issues = parsed.error.issues.map((issue) => ({
      ...issue,
      message: `Option --${kebab(String(issue.path[0] ?? ''))}: ${issue.message}`,
      path: [],
    }));
    throw new ConfigError(z.prettifyError(new z.ZodError(issues)));
  }
  return resolveSimulatorOptions(parsed.data);
}

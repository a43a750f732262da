import { describe, expect, it } from 'vitest';
import { type LocalRunOptions, parseLocalRunArgs, UsageError } from '#local/run/options.ts';
import { describeProgress } from '#local/run/progress.ts';
import { resumeCommandOf } from '#local/run/resume.ts';
import { SIMULATOR_USAGE } from '#local/simulator/options.ts';

/** parseLocalRunArgs with an empty environment: what a fresh shell would give. */
function parse(argv: string[], env: NodeJS.ProcessEnv = {}): LocalRunOptions {
  const o = parseLocalRunArgs(argv, env);
  if (o === 'help') throw new Error('unexpected help');
  return o;
}

function usageMessage(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  try {
    parseLocalRunArgs(argv, env);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error(`no UsageError for ${argv.join(' ')}`);
}

describe('numeric options', () => {
  it.each([
    ['--events', '0x10', '--events must be a whole number from 1 to 50,000,000 (decimal digits), got "0x10"'],
    ['--events', '1e3', '--events must be a whole number from 1 to 50,000,000 (decimal digits), got "1e3"'],
    ['--events', ' 16', '--events must be a whole number from 1 to 50,000,000 (decimal digits), got " 16"'],
    ['--seed', '1.5', '--seed must be a whole number from 0 to 4,294,967,295 (decimal digits), got "1.5"'],
    [
      '--time-scale',
      '1e3',
      '--time-scale must be a number above 0 and at most 100,000 (decimal digits, e.g. 50 or 0.5), got "1e3"',
    ],
  ])('refuses %s %s: decimal digits only, named with its bounds', (flag, value, message) => {
    expect(usageMessage([flag, value])).toBe(message);
  });

  it('names the bound of --max-iterations and --min-spacing-ms, not only "a whole number"', () => {
    expect(usageMessage(['--max-iterations', '5000'])).toBe(
      '--max-iterations must be a whole number from 1 to 2,000 (decimal digits), got "5000"',
    );
    expect(usageMessage(['--max-iterations', '0'])).toContain('from 1 to 2,000');
    expect(usageMessage(['--min-spacing-ms', '-1'])).toBe(
      '--min-spacing-ms must be a whole number from 0 to 600,000 (decimal digits), got "-1"',
    );
  });

  it('lists auto for --chains and live for --latency-ms among the choices', () => {
    expect(usageMessage(['--chains', 'abc'])).toBe(
      '--chains must be a whole number from 1 to 10 or auto (decimal digits), got "abc"',
    );
    expect(usageMessage(['--latency-ms', 'fast'])).toBe(
      '--latency-ms must be a number from 0 to 600,000 or live (decimal digits, e.g. 50 or 0.5), got "fast"',
    );
  });

  it('still takes decimals where a fraction makes sense', () => {
    expect(parse(['--time-scale', '0.5']).timeScale).toBe(0.5);
    expect(parse(['--latency-ms', 'live']).latencyMs).toBe('live');
    expect(parse(['--chains', 'auto']).chains).toBe('auto');
    expect(parse(['--events', '100000']).events).toBe(100_000);
  });
});

describe('the source of a run', () => {
  it('is "default" for the main job, npm run local with no options', () => {
    expect(parse([]).sourceId).toBe('default');
  });

  it('is named after a quick variant, so that it never touches the main job', () => {
    expect(parse(['--events', '100000']).sourceId).toBe('sim-100000');
    expect(parse(['--events', '100000', '--chaos']).sourceId).toBe('sim-100000-chaos');
    expect(parse(['--time-scale', '50']).sourceId).toBe('sim-3000000-x50');
    expect(parse(['--chains', '1']).sourceId).toBe('sim-3000000-chains1');
    expect(parse(['--seed', '2', '--latency-ms', '0']).sourceId).toBe('sim-3000000-seed2-latency0');
  });

  it('is what --source says, whatever the options', () => {
    expect(parse(['--events', '100000', '--source', 'mine']).sourceId).toBe('mine');
  });

  it('is "default" against a real API', () => {
    expect(parse(['--api-url', 'https://h/api/v1', '--api-key', 'k']).sourceId).toBe('default');
  });

  it('names --source, not sourceId, in its error', () => {
    expect(usageMessage(['--source', 'a b'])).toMatch(/^--source must be 1-64 characters .*, got "a b"$/);
  });
});

describe('settings from the environment', () => {
  it('reports a bad DATABASE_URL or DATASYNC_API_URL as the variable, not as a flag', () => {
    expect(usageMessage([], { DATABASE_URL: 'mysql://x' })).toMatch(
      /^DATABASE_URL must be a postgres:\/\/ URL/,
    );
    expect(usageMessage([], { DATASYNC_API_URL: 'ftp://x', DATASYNC_API_KEY: 'k' })).toMatch(
      /^DATASYNC_API_URL must be an http\(s\) URL/,
    );
    expect(usageMessage(['--database-url', 'mysql://x'])).toMatch(/^--database-url must be/);
  });

  it('says postgres://::::: does not parse (exit 2), instead of a bare "Invalid URL"', () => {
    expect(usageMessage(['--database-url', 'postgres://:::::'])).toMatch(
      /^--database-url does not parse as a URL \(host, port 1-65535, user, database\): got "postgres:\/\/:::::"/,
    );
  });

  it('never repeats the password of a refused URL', () => {
    const message = usageMessage(['--database-url', 'postgres://u:s3cret@h:99999/db']);
    expect(message).not.toContain('s3cret');
    const api = usageMessage(['--api-url', 'ftp://u:s3cret@h/api', '--api-key', 'k']);
    expect(api).not.toContain('s3cret');
  });

  it.each([
    ['PAGE_SIZE', 'abc'],
    ['CHAINS', 'abc'],
    ['MIN_REQUEST_SPACING_MS', '-5'],
    ['DATABASE_SSL', 'bogus'],
  ])('refuses %s=%s, a setting of the deployed function the local run does not read', (name, value) => {
    const message = usageMessage([], { [name]: value });
    expect(message).toContain(`${name} is a setting of the deployed function`);
    expect(message).toContain('npm run local does not read');
  });
});

describe('the resume command', () => {
  it('repeats the options without the API key or a password', () => {
    const command = resumeCommandOf([
      '--api-url',
      'https://user:apipass@host/api/v1',
      '--api-key',
      'sk-live-123',
      '--database-url=postgres://app:dbpass@db:5432/datasync',
      '--source',
      'live',
    ]);
    expect(command).not.toContain('sk-live-123');
    expect(command).not.toContain('dbpass');
    expect(command).not.toContain('apipass');
    expect(command).toBe(
      `npm run local -- --api-url 'https://user:<password>@host/api/v1' --api-key "$DATASYNC_API_KEY" ` +
        `--database-url 'postgres://app:<password>@db:5432/datasync' --source live`,
    );
  });

  it('is the plain command for the main job', () => {
    expect(resumeCommandOf([])).toBe('npm run local');
    expect(resumeCommandOf(['--events', '100000'])).toBe('npm run local -- --events 100000');
  });
});

describe('help texts', () => {
  it('keeps every simulator option apart from its help (a long flag gets a line of its own)', () => {
    for (const line of SIMULATOR_USAGE.split('\n').slice(1)) {
      if (!line.startsWith('  --')) continue;
      // The flag and its arguments, then at least two spaces, or the end of the line.
      expect(line).toMatch(/^ {2}--\S+(?: \S+)?(?: {2,}\S.*)?$/);
    }
    expect(SIMULATOR_USAGE).toContain('--built-cursors by-ts|by-ts-id|refuse|refuse-502|ignore\n');
  });

  it('shows a progress line of one page as "1 page"', () => {
    const one = describeProgress({
      stored: 5000,
      total: 10_000,
      pages: 1,
      rejected: 0,
      rateLimited: 0,
      elapsedMs: 1000,
      storedThisRun: 5000,
    });
    expect(one.line).toContain('events, 1 page, ');
  });
});

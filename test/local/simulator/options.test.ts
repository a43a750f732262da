import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CHAOS_PROFILE,
  HelpRequested,
  parseSimulatorArgs,
  resolveSimulatorOptions,
  SIMULATOR_USAGE,
  simulatorOptionsInputSchema,
} from '#local/simulator/options.ts';
import { ConfigError } from '#shared/errors.ts';

const ROOT = resolve(import.meta.dirname, '../../..');

describe('parseSimulatorArgs', () => {
  it('reads every documented flag in both --flag value and --flag=value forms', () => {
    const o = parseSimulatorArgs([
      '--port=0',
      '--events',
      '5000',
      '--seed',
      '3',
      '--api-key',
      'k',
      '--window-seconds',
      '0.5',
      '--rate-limit',
      '0',
      '--window-mode',
      'sliding',
      '--time-scale',
      '4',
      '--latency-ms',
      '10',
      '--count-rejected',
      '--reject-refreshed-cursors',
      '--truncated-body-rate=0.5',
    ]);
    expect(o).toMatchObject({
      port: 0,
      events: 5000,
      seed: 3,
      apiKey: 'k',
      windowSeconds: 0.5,
      rateLimit: 0,
      windowMode: 'sliding',
      timeScale: 4,
      latencyMs: 10,
      countRejected: true,
      rejectRefreshedCursors: true,
      truncatedBodyRate: 0.5,
      transientErrorRate: 0,
    });
  });

  it('defaults to port 4010, 3,000,000 events, 10 per 20 s fixed, key local-dev-key, no faults', () => {
    expect(parseSimulatorArgs([])).toMatchObject({
      port: 4010,
      events: 3_000_000,
      rateLimit: 10,
      windowSeconds: 20,
      windowMode: 'fixed',
      apiKey: 'local-dev-key',
      timeScale: 1,
      malformedTimestampRate: 0,
    });
    expect(parseSimulatorArgs(['--chaos'])).toMatchObject({ chaos: true, ...CHAOS_PROFILE });
  });

  it('names the option and the fix for unknown flags and bad values', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--nope'], /^Unknown option --nope: run `npm run simulator -- --help`/],
      [['stray'], /^Unexpected argument "stray": every option starts with --/],
      [['--events', 'many'], /^Option --events must be a whole number, got "many": write --events N\.$/],
      [['--window-seconds', '0'], /^✖ Option --window-seconds: pass a number above 0$/],
      [
        ['--window-seconds', '-1'],
        /^Option --window-seconds needs a value, .* write --window-seconds=VALUE\.$/,
      ],
      [['--window-mode', 'leaky'], /^✖ Option --window-mode: pass fixed or sliding$/],
      [['--port'], /^Option --port needs a value: write --port VALUE or --port=VALUE\.$/],
      [['--chaos=maybe'], /^Option --chaos takes no value: write --chaos alone/],
      [
        ['--duplicate-row-rate', '2'],
        /^✖ Option --duplicate-row-rate: a rate is a probability: pass a number from 0 to 1$/,
      ],
    ];
    for (const [argv, message] of cases) {
      let caught: unknown;
      try {
        parseSimulatorArgs(argv);
      } catch (error) {
        caught = error;
      }
      expect(caught, argv.join(' ')).toBeInstanceOf(ConfigError);
      expect((caught as Error).message, argv.join(' ')).toMatch(message);
    }
  });

  it('reports every invalid option at once, one line each', () => {
    expect(() => parseSimulatorArgs(['--events', '0', '--window-seconds=-1'])).toThrow(
      '✖ Option --events: pass a whole number from 1 to 100000000\n✖ Option --window-seconds: pass a number above 0',
    );
  });

  it('answers --help with a usage that lists every option', () => {
    for (const argv of [['--help'], ['-h'], ['--events', '5', '--help']]) {
      expect(() => parseSimulatorArgs(argv)).toThrow(HelpRequested);
    }
    const flags = Object.keys(simulatorOptionsInputSchema.shape).map(
      (name) => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`,
    );
    expect(flags.length).toBeGreaterThan(20);
    for (const flag of flags) expect(SIMULATOR_USAGE).toMatch(new RegExp(`^  ${flag}\\b`, 'm'));
  });

  it('as a command: --help exits 0 with the usage, a bad value exits 2 naming the option', () => {
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, ['--import', 'tsx', 'local/simulator/cli.ts', ...args], {
        cwd: ROOT,
        encoding: 'utf8',
      });
    const help = cli('--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--reject-refreshed-cursors');
    const bad = cli('--window-mode', 'leaky');
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim()).toBe('simulator: ✖ Option --window-mode: pass fixed or sliding');
  });

  it('names the property and the fix when the programmatic options are invalid', () => {
    expect(() => resolveSimulatorOptions({ windowSeconds: 0, events: 1.5 })).toThrow(
      /^Simulator options are invalid .*\n✖ pass a whole number from 1 to 100000000\n {2}→ at events\n✖ pass a number above 0\n {2}→ at windowSeconds$/,
    );
  });

  it('refuses per-event fault rates that add up to more than one', () => {
    expect(() => resolveSimulatorOptions({ malformedTimestampRate: 0.6, missingFieldRate: 0.6 })).toThrow(
      /add up to 1\.2/,
    );
    expect(() => resolveSimulatorOptions({ bogus: 1 })).toThrow(ConfigError);
  });
});

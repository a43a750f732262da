import { describe, expect, it } from 'vitest';
import { CHAOS_PROFILE, parseSimulatorArgs, resolveSimulatorOptions } from '#local/simulator/options.ts';
import { ConfigError } from '#shared/errors.ts';

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

  it('names the option in one line for unknown flags and bad values', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--nope'], /^Unknown option "--nope"/],
      [['--events', 'many'], /^Option --events must be an integer, got "many"\.$/],
      [['--window-seconds', '0'], /^Option --window-seconds is invalid/],
      [['--window-mode', 'leaky'], /^Option --window-mode is invalid/],
      [['--port'], /^Option --port needs a value\.$/],
      [['--chaos=maybe'], /^Option --chaos takes no value/],
      [['--duplicate-row-rate', '2'], /^Option --duplicate-row-rate is invalid/],
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
      expect((caught as Error).message).not.toContain('\n');
    }
  });

  it('refuses per-event fault rates that add up to more than one', () => {
    expect(() => resolveSimulatorOptions({ malformedTimestampRate: 0.6, missingFieldRate: 0.6 })).toThrow(
      /add up to 1\.2/,
    );
    expect(() => resolveSimulatorOptions({ bogus: 1 })).toThrow(ConfigError);
  });
});

import { describe, expect, it } from 'vitest';
import { parseLocalRunArgs } from '#local/run/options.ts';
import { plannedEventsPerSecond, stepConfig } from '#local/run/scaling.ts';
import { DEFAULT_LATENCY, resolveSimulatorOptions } from '#local/simulator/index.ts';

const target = {
  apiUrl: 'http://127.0.0.1:1/api/v1',
  apiKey: 'k',
  databaseUrl: 'postgres://x@h/db',
  pageSize: 5000,
};
const pacing = { timeScale: 1, minSpacingMs: 2200, rateLimit: 10, windowSeconds: 20, latencyMs: 0 };

describe('the step configuration of a local run', () => {
  it.each([1, 20, 50, 500])(
    'keeps the cursor refresh margin well inside the simulator cursor lifetime at time-scale %d',
    (timeScale) => {
      const config = stepConfig({ ...pacing, timeScale }, target);
      const cursorTtlMs = (resolveSimulatorOptions({ timeScale }).cursorTtlSeconds * 1000) / timeScale;
      // An unscaled 15 s margin against a 2.3 s scaled lifetime refreshed every cursor of a scaled
      // run: the margin must shrink with the clock, leaving most of the lifetime to use.
      expect(config.cursorRefreshMarginMs).toBeLessThan(cursorTtlMs / 5);
      expect(config.minSpacingMs).toBe(Math.ceil(2200 / timeScale));
      expect(config.safetyMarginMs).toBe(Math.ceil(250 / timeScale));
      expect(config.pageSize).toBe(5000);
    },
  );

  it('stays valid for a slowed-down run (time-scale below 1)', () => {
    const config = stepConfig({ ...pacing, timeScale: 0.1 }, target);
    expect(config.cursorRefreshMarginMs).toBe(110_000);
    expect(config.leaseTtlMs).toBe(1_800_000);
  });
});

describe('the planned rate behind the first ETA', () => {
  it('follows the slowest of the spacing, the window share and the latency per chain, scaled', () => {
    // 10 per 20 s is one request per 2 s; the 2.2 s spacing is slower: 5000 events per 2.2 s.
    expect(plannedEventsPerSecond(pacing, 5000)).toBeCloseTo(5000 / 2.2, 6);
    // 10 per 60 s: one request per 6 s.
    expect(plannedEventsPerSecond({ ...pacing, windowSeconds: 60 }, 5000)).toBeCloseTo(5000 / 6, 6);
    // One chain waits for each answer: the latency, when it is longer than the spacing...
    expect(
      plannedEventsPerSecond({ ...pacing, latencyMs: 3500, timeScale: 10, chains: 1 }, 5000),
    ).toBeCloseTo(5000 / 0.35, 6);
    // ...chains overlap it (auto plans them when the latency exceeds the spacing).
    expect(plannedEventsPerSecond({ ...pacing, latencyMs: 3500, timeScale: 10 }, 5000)).toBeCloseTo(
      5000 / 0.22,
      6,
    );
    expect(
      plannedEventsPerSecond({ ...pacing, rateLimit: 0, minSpacingMs: 0, latencyMs: 0 }, 5000),
    ).toBeNull();
  });

  it('takes the live preset and pages smaller than 5000 events in proportion, as the simulator does', () => {
    const live = plannedEventsPerSecond(
      { ...pacing, minSpacingMs: 0, rateLimit: 0, latencyMs: 'live', chains: 1 },
      5000,
    );
    expect(live).toBeCloseTo(5000 / 3.5, 6);
    // 1000-event pages take a fifth of the 3.5 s.
    expect(
      plannedEventsPerSecond({ ...pacing, minSpacingMs: 0, rateLimit: 0, latencyMs: 3500, chains: 1 }, 1000),
    ).toBeCloseTo(1000 / 0.7, 6);
    // Without spacing or limit, auto runs the most chains: ten requests per latency.
    expect(
      plannedEventsPerSecond({ ...pacing, minSpacingMs: 0, rateLimit: 0, latencyMs: 3500 }, 5000),
    ).toBeCloseTo(50_000 / 3.5, 6);
  });
});

describe('--latency-ms', () => {
  it('accepts live, a number, and leaves the simulator default when absent', () => {
    const base = ['--database-url', 'postgres://u@h:5432/d'];
    expect(parseLocalRunArgs([...base, '--latency-ms', 'live'], {})).toMatchObject({ latencyMs: 'live' });
    expect(parseLocalRunArgs([...base, '--latency-ms', '1200'], {})).toMatchObject({ latencyMs: 1200 });
    expect(parseLocalRunArgs(base, {})).toMatchObject({ latencyMs: DEFAULT_LATENCY });
    expect(() => parseLocalRunArgs([...base, '--latency-ms', 'slow'], {})).toThrow(/--latency-ms/);
  });
});

import { describe, expect, it } from 'vitest';
import { parseDuration, parseLocalRunArgs, UsageError } from '#local/run/options.ts';
import { followLine, topUpOf } from '#local/run/topup.ts';
import { row } from '#test/support/chains.ts';

/** The top-up block of `npm run local`'s options, and what a top-up's line says. */

describe('top-up options', () => {
  it('reads --follow, --every, --lookback and the simulator growth, with documented defaults', () => {
    const defaults = parseLocalRunArgs([], {});
    expect(defaults).toMatchObject({
      follow: false,
      everyMs: 300_000,
      lookbackMs: 900_000,
      growRate: 0,
      growLateShare: 0,
    });
    const given = parseLocalRunArgs(
      ['--follow', '--every', '90s', '--lookback', '0', '--grow-rate', '20', '--grow-late-share', '0.05'],
      {},
    );
    expect(given).toMatchObject({
      follow: true,
      everyMs: 90_000,
      lookbackMs: 0,
      growRate: 20,
      growLateShare: 0.05,
    });
    expect(parseDuration('5m')).toBe(300_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('30')).toBe(30_000);
    expect(parseDuration('soon')).toBeNull();
  });

  it('refuses a bad value naming the flag and the form it takes', () => {
    expect(() => parseLocalRunArgs(['--every', 'often'], {})).toThrow(UsageError);
    expect(() => parseLocalRunArgs(['--every', 'often'], {})).toThrow(
      /--every must be a duration such as 90s, 5m or 1h/,
    );
    expect(() => parseLocalRunArgs(['--every', '10ms'], {})).toThrow(/--every must be at least 1s/);
    expect(() => parseLocalRunArgs(['--lookback', '40d'], {})).toThrow(/--lookback must be from 0 to 30d/);
    expect(() => parseLocalRunArgs(['--grow-late-share', '2'], {})).toThrow(/--grow-late-share is a share/);
  });
});

describe('a top-up in the summary', () => {
  const marks = (over: Record<string, unknown>) => ({
    hwmTs: null,
    hwmId: null,
    signpostTs: null,
    signpostId: null,
    floorTs: null,
    topupStartedAtMs: null,
    baseInserted: null,
    lastTopupAtMs: null,
    lastTopupInserted: null,
    topups: 0,
    lateBeyondLookback: 0,
    ...over,
  });

  it('is what a run of a complete source added, and none for a backfill', () => {
    const before = [
      row({ status: 'complete', eventsInserted: 1000, requests: 10, marks: marks({ hwmTs: 5 }) }),
    ];
    const after = [
      row({
        status: 'complete',
        eventsInserted: 1240,
        requests: 11,
        marks: marks({ hwmTs: 9, lateBeyondLookback: 2 }),
      }),
    ];
    const t = topUpOf(before, after);
    expect(t).toEqual({
      newEvents: 240,
      lateBeyondLookback: 2,
      requests: 1,
      highWaterMark: new Date(9).toISOString(),
    });
    expect(topUpOf([row({ status: 'running' })], after)).toBeNull();
    const line = followLine(3, { status: 'complete', verified: true, events: 1240, topUp: t }, 1500);
    expect(line).toMatch(
      /^top-up 3 at \d\d:\d\d:\d\d: \+240 events \(2 late beyond the lookback\), 1 request\(s\), 1\.5 s, high-water mark 1970-01-01T00:00:00\.009Z; 1,240 stored\n$/,
    );
  });
});

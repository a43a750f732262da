import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mean, percentile, positiveInt, readPageLogs, round1, round3, sum } from '../../bench/lib.ts';

describe('bench/lib helpers', () => {
  it('positiveInt accepts whole numbers from 1 and names the flag otherwise', () => {
    expect(positiveInt('600', '--pages')).toBe(600);
    for (const bad of ['0', '-1', '1.5', 'abc', '', undefined]) {
      expect(() => positiveInt(bad, '--pages')).toThrow(/--pages must be a positive whole number/);
    }
  });

  it('percentile is the nearest-rank value, whatever the input order', () => {
    const xs = [50, 10, 40, 20, 30];
    expect(percentile(xs, 50)).toBe(30);
    expect(percentile(xs, 95)).toBe(50);
    expect(percentile(xs, 0)).toBe(10);
    expect(percentile([], 50)).toBe(0);
    expect(xs).toEqual([50, 10, 40, 20, 30]); // not sorted in place
  });

  it('sum, mean and rounding', () => {
    expect(sum([1, 2, 3.5])).toBe(6.5);
    expect(mean([])).toBe(0);
    expect(mean([2, 4])).toBe(3);
    expect(round1(1.26)).toBe(1.3);
    expect(round3(1.0004)).toBe(1);
    expect(round3(1.0276)).toBe(1.028);
  });

  it('readPageLogs keeps only page lines, with the instant each was written', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsi-bench-lib-'));
    const file = join(dir, 'source.log');
    const page = (time: string, message: string, latency: number) =>
      JSON.stringify({
        time,
        level: 'INFO',
        message,
        upstreamLatencyMs: latency,
        persistMs: 40,
        page: { received: 5000, inserted: 5000, duplicates: 0, rejected: 0 },
      });
    writeFileSync(
      file,
      [
        JSON.stringify({ time: '2026-11-29T06:00:00.000Z', level: 'INFO', message: 'cursor refreshed' }),
        page('2026-11-29T06:00:01.250Z', 'page stored', 30),
        JSON.stringify({
          time: '2026-11-29T06:00:01.300Z',
          level: 'WARN',
          message: 'retrying',
          upstreamLatencyMs: 'x',
        }),
        page('2026-11-29T06:00:02.500Z', 'source complete', 31),
        '',
      ].join('\n'),
    );
    const logs = await readPageLogs(file);
    expect(logs.map((l) => [l.message, l.upstreamLatencyMs, l.atMs])).toEqual([
      ['page stored', 30, Date.parse('2026-11-29T06:00:01.250Z')],
      ['source complete', 31, Date.parse('2026-11-29T06:00:02.500Z')],
    ]);
  });

  it('readPageLogs names the missing file and where the runner writes it', async () => {
    await expect(readPageLogs('/nonexistent/dir/x.log')).rejects.toThrow(
      /Cannot read the local run's log \/nonexistent\/dir\/x\.log: .*<dataDir>\/logs/,
    );
  });
});

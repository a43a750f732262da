import { describe, expect, it } from 'vitest';
import { run } from '../../bench/persist.ts';

describe('persist benchmark', () => {
  it('stores every page through persistPage and reports its rate beside the bare-COPY limit of the same pages', async () => {
    const result = await run(['--pages', '3', '--page-size', '40']);
    expect(result).toMatchObject({ bench: 'persist', events: 120, pages: 3, pageSize: 40 });
    const { eventsPerSecond, copyLimitEventsPerSecond, ratioToCopyLimit } = result as Record<string, number>;
    expect(eventsPerSecond).toBeGreaterThan(0);
    expect(copyLimitEventsPerSecond).toBeGreaterThan(0);
    // The ratio is derived from the two rates of the same run (rounded to 3 decimals).
    expect(ratioToCopyLimit).toBeCloseTo(
      (eventsPerSecond as number) / (copyLimitEventsPerSecond as number),
      2,
    );
  });

  it('names the flag when an argument is not a positive whole number', async () => {
    await expect(run(['--pages', '0'])).rejects.toThrow(/--pages must be a positive whole number/);
  });
});

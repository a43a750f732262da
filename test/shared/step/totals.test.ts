import { describe, expect, it } from 'vitest';
import { byChain, sourceHeader, sourceTotals } from '#shared/step/totals.ts';
import { row, threeChains } from '#test/support/chains.ts';

describe('source totals over cursor chains', () => {
  it("sums every counter over the source's own row and its chain rows", () => {
    expect(sourceTotals(threeChains())).toEqual({
      pages: 120 + 98 + 42,
      inserted: 600_000 + 489_998 + 210_000,
      duplicates: 0 + 2 + 5,
      rejected: 3 + 1 + 0,
      requests: 121 + 99 + 43,
      rateLimited: 0 + 1 + 0,
    });
  });

  it('is the row itself for a source read by one chain, and zero for none', () => {
    const one = row({
      pages: 7,
      eventsInserted: 35_000,
      duplicatesSkipped: 1,
      rejected: 2,
      requests: 9,
      rateLimited: 1,
    });
    expect(sourceTotals([one])).toEqual({
      pages: 7,
      inserted: 35_000,
      duplicates: 1,
      rejected: 2,
      requests: 9,
      rateLimited: 1,
    });
    expect(sourceTotals([]).inserted).toBe(0);
  });

  it('finds the header and puts the rows in chain order whatever order they come in', () => {
    const [zero, one, two] = threeChains();
    const shuffled = [two!, zero!, one!];
    expect(sourceHeader(shuffled)?.sourceId).toBe('default');
    expect(byChain(shuffled).map((r) => r.sourceId)).toEqual(['default', 'default~1', 'default~2']);
    expect(sourceHeader([one!, two!])).toBeNull();
  });
});

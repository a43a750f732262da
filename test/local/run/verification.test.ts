import { describe, expect, it } from 'vitest';
import { verificationProblem } from '#local/run/verification.ts';
import { row, threeChains } from '#test/support/chains.ts';

const complete = () => {
  const rows = threeChains().map((r) => ({
    ...r,
    rangeDone: true,
    leaseOwner: null,
    leaseExpiresAtMs: null,
  }));
  rows[0] = { ...rows[0]!, status: 'complete' as const };
  return rows;
};
// 1,299,998 stored events, 4 rejected rows: what the three rows count together.
const stored = { events: 1_299_998, distinctIds: 1_299_998, rejectedRows: 4 };

describe('verification of a source read by several chains', () => {
  it("holds when the stored rows match the SUM of the chains' counters", () => {
    expect(verificationProblem(stored, complete(), 1_299_998)).toBeNull();
  });

  it("fails when only the source's own row is counted against a chained source", () => {
    // The source row alone counts 600,000: a verification that ignored the chain rows would pass
    // or fail for the wrong reason; it must name the sum it used.
    expect(verificationProblem({ ...stored, events: 600_000, distinctIds: 600_000 }, complete(), null)).toBe(
      '600000 events are stored and the checkpoints of its 3 chains count 1299998',
    );
    expect(verificationProblem({ ...stored, rejectedRows: 3 }, complete(), null)).toBe(
      '3 rejected rows are stored and the checkpoints of its 3 chains count 4',
    );
  });

  it('fails while the upstream contradicted itself: any conflicting duplicate, on any chain', () => {
    const rows = complete();
    rows[1] = { ...rows[1]!, conflicts: 1 };
    expect(verificationProblem(stored, rows, 1_299_998)).toBe(
      '1 conflicting duplicate: event ids sent again with other content (the first copy is stored; each other copy and the fields that differ are in table event_conflicts)',
    );
  });

  it('fails on a lost or doubled event, whichever chain it belongs to', () => {
    expect(
      verificationProblem({ ...stored, events: 1_299_997, distinctIds: 1_299_997 }, complete(), null),
    ).toMatch(/^1299997 events are stored/);
    expect(verificationProblem({ ...stored, distinctIds: 1_299_997 }, complete(), null)).toBe(
      '1 event ids are stored more than once',
    );
    expect(verificationProblem(stored, complete(), 1_300_000)).toBe(
      '1299998 events are stored and the upstream holds 1300000 valid ones',
    );
  });

  it("refuses rows that are not the source's, and a source without its own row", () => {
    const rows = complete();
    rows[2] = { ...rows[2]!, sourceId: 'other~2', chainOf: 'other' };
    expect(verificationProblem(stored, rows, null)).toBe('the checkpoint other~2 is not a chain of default');
    expect(verificationProblem(stored, complete().slice(1), null)).toBe('the source has no checkpoint');
    expect(verificationProblem(stored, null, null)).toBe('the source has no checkpoint');
  });

  it('still takes the single checkpoint of a source read by one chain', () => {
    const one = row({ status: 'complete', eventsInserted: 5000, rejected: 1 });
    expect(verificationProblem({ events: 5000, distinctIds: 5000, rejectedRows: 1 }, one, 5000)).toBeNull();
    expect(verificationProblem({ events: 4999, distinctIds: 4999, rejectedRows: 1 }, [one], null)).toBe(
      '4999 events are stored and the checkpoint counts 5000',
    );
  });
});

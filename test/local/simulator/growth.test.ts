import { describe, expect, it } from 'vitest';
import { createDataset, type Dataset } from '#local/simulator/dataset.ts';

/*
 * The growing data set (local/simulator/growth.ts), in-process: the merged order stays
 * (timestamp desc, id desc), every event keeps its (timestamp, id), and the positions a cursor
 * resolves to keep meaning the same place.
 */

function order(d: Dataset): Array<{ ts: number; id: string }> {
  return Array.from({ length: d.total }, (_, i) => ({ ts: d.timestampAt(i), id: d.idAt(i) }));
}

function expectOrdered(d: Dataset) {
  const all = order(d);
  for (let i = 1; i < all.length; i++) {
    const a = all[i - 1]!;
    const b = all[i]!;
    expect(a.ts > b.ts || (a.ts === b.ts && a.id > b.id), `index ${i}`).toBe(true);
  }
  expect(new Set(all.map((e) => e.id)).size).toBe(all.length);
}

describe('a growing data set', () => {
  it('adds newer and late events in the (timestamp desc, id desc) order, every earlier event unchanged', () => {
    const d = createDataset({ events: 3000, seed: 7 });
    const before = new Map(order(d).map((e) => [e.id, e.ts]));
    const newest = d.timestampAt(0);
    const r = d.grow({ newer: 400, lateWithin: 30, lateBeyond: 20, lookbackMs: 3_600_000 });
    expect(r).toMatchObject({ added: 450, total: 3450, newestBeforeMs: newest });
    expect(d.total).toBe(3450);
    expect(d.grown).toBe(450);
    expectOrdered(d);
    const after = new Map(order(d).map((e) => [e.id, e.ts]));
    for (const [id, ts] of before) expect(after.get(id)).toBe(ts);
    // The first newer event ties with the old newest (a tie at a client's high-water mark).
    expect([...after.values()].filter((ts) => ts === newest).length).toBeGreaterThanOrEqual(2);
    const late = [...after].filter(([id, ts]) => !before.has(id) && ts <= newest);
    expect(late.filter(([, ts]) => ts >= newest - 3_600_000).length).toBeGreaterThanOrEqual(31);
    expect(late.filter(([, ts]) => ts < newest - 3_600_000 && ts >= newest - 7_200_000).length).toBe(20);
    expect(r.newestMs).toBe(d.timestampAt(0));
  });

  it('maps ids and positions both ways, so cursors resolve to the same place', () => {
    const d = createDataset({ events: 2000, seed: 3 });
    const cursorAt = 700;
    const pos = { ts: d.timestampAt(cursorAt), id: d.idAt(cursorAt) };
    const nextBase = d.idAt(cursorAt + 1);
    d.grow({ newer: 100, lateWithin: 5, lateBeyond: 0, lookbackMs: 60_000 });
    for (let i = 0; i < d.total; i++) expect(d.indexOfId(d.idAt(i))).toBe(i);
    // Strictly after the cursor's (ts, id): the event after it, whatever grew above.
    const after = d.indexAfter(pos.ts, pos.id);
    expect(d.idAt(after - 1)).toBe(pos.id);
    expect(d.idAt(after)).toBe(nextBase);
    expect(d.indexAtOrBefore(pos.ts)).toBeLessThanOrEqual(after - 1);
    expect(d.timestampAt(d.indexAtOrBefore(pos.ts))).toBe(pos.ts);
  });

  it('serialises a range across grown and base events as event by event, with the base faults where they were', () => {
    const d = createDataset({ events: 4000, seed: 5, faults: { malformedTimestampRate: 0.02 } });
    const rejectedIds = d.rejectedIndices().map((i) => d.idAt(i));
    const valid = d.expectedValidCount();
    d.grow({ newer: 250, lateWithin: 40, lateBeyond: 10, lookbackMs: 5 * 86_400_000 });
    const { json } = d.serialiseRange(0, 1500);
    const one = Array.from({ length: 1500 }, (_, i) => d.serialiseEvent(i)).join(',');
    expect(json).toBe(one);
    expect(JSON.parse(`[${json}]`).map((e: { id: string }) => e.id)).toEqual(
      Array.from({ length: 1500 }, (_, i) => d.idAt(i)),
    );
    expect(d.rejectedIndices().map((i) => d.idAt(i))).toEqual(rejectedIds);
    expect(d.expectedValidCount()).toBe(valid + 300);
    for (let i = 0; i < 300; i++) expect(d.eventAt(i).index).toBe(i);
  });

  it('refuses a growth it cannot hold, naming the fix', () => {
    const d = createDataset({ events: 100, seed: 1 });
    expect(() => d.grow({ newer: -1 })).toThrow(/newer must be a whole number/);
    expect(() => d.grow({ newer: 3_000_000 })).toThrow(/restart it to start over/);
    expect(d.total).toBe(100);
  });
});

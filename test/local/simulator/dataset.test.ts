import { describe, expect, it } from 'vitest';
import { createDataset, DATASET_END_MS, DATASET_START_MS, TYPE_TOTALS } from '#local/simulator/dataset.ts';
import { normaliseEvent } from '#shared/upstream/normalise.ts';

const N = 200_000;
const d = createDataset({ events: N, seed: 42 });
const events = Array.from({ length: N }, (_, i) => d.eventAt(i));

describe('the generated data set (200,000 events)', () => {
  it('groups events into sessions of 35 to 70 with one user, device and browser each', () => {
    const sessions = new Map<
      string,
      { n: number; users: Set<string>; devices: Set<string>; browsers: Set<string> }
    >();
    const mismatched = events.filter((e) => e.session.id !== e.sessionId);
    expect(mismatched).toEqual([]);
    for (const e of events) {
      let s = sessions.get(e.sessionId);
      if (!s) {
        s = { n: 0, users: new Set(), devices: new Set(), browsers: new Set() };
        sessions.set(e.sessionId, s);
      }
      s.n++;
      s.users.add(e.userId);
      s.devices.add(e.session.deviceType);
      s.browsers.add(e.session.browser);
    }
    expect(sessions.size).toBe(N / 50);
    expect(d.sessionCount).toBe(N / 50);
    const bad = [...sessions.entries()].filter(
      ([, s]) => s.n < 35 || s.n > 70 || s.users.size !== 1 || s.devices.size !== 1 || s.browsers.size !== 1,
    );
    expect(bad).toEqual([]);
    const users = new Set(events.map((e) => e.userId));
    expect(users.size).toBeGreaterThan(180);
    expect(users.size).toBeLessThanOrEqual(200);
    expect(new Set(events.map((e) => e.session.deviceType))).toEqual(
      new Set(['mobile', 'tablet', 'desktop']),
    );
    expect(new Set(events.map((e) => e.session.browser))).toEqual(
      new Set(['Chrome', 'Firefox', 'Safari', 'Edge']),
    );
  });

  it('draws the eight types in the service proportions', () => {
    const counts = new Map<string, number>();
    for (const e of events) counts.set(e.type, (counts.get(e.type) ?? 0) + 1);
    expect(new Set(counts.keys())).toEqual(new Set(Object.keys(TYPE_TOTALS)));
    for (const [type, total] of Object.entries(TYPE_TOTALS)) {
      expect(Math.abs(counts.get(type)! / N - total / 3_000_000), type).toBeLessThan(0.005);
    }
  });

  it('has v4-shaped unique ids, event_xxxxxx names and {"page":"/home"} properties', () => {
    expect(new Set(events.map((e) => e.id)).size).toBe(N);
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    const bad = events.filter(
      (e) =>
        !uuid.test(e.id) ||
        !uuid.test(e.sessionId) ||
        !uuid.test(e.userId) ||
        !/^event_[a-z0-9]{6}$/.test(e.name) ||
        JSON.stringify(e.properties) !== '{"page":"/home"}',
    );
    expect(bad).toEqual([]);
  });

  it('orders newest first from 27 January 2026 back to late December 2025, ties broken by id descending', () => {
    let ties = 0;
    const disordered: number[] = [];
    for (let i = 1; i < N; i++) {
      const a = events[i - 1]!;
      const b = events[i]!;
      if (b.timestampMs === a.timestampMs) ties++;
      if (!(b.timestampMs < a.timestampMs || (b.timestampMs === a.timestampMs && b.id < a.id)))
        disordered.push(i);
    }
    expect(disordered).toEqual([]);
    // About one tie per thousand events (the capture: five in 5000).
    expect(ties).toBeGreaterThan(100);
    expect(ties).toBeLessThan(400);
    expect(new Date(events[0]!.timestampMs).toISOString().slice(0, 13)).toBe('2026-01-27T19');
    expect(new Date(events.at(-1)!.timestampMs).toISOString().slice(0, 7)).toBe('2025-12');
  });

  it('serialises every third index as epoch ms and the rest as ISO strings that normalise to the same instant', () => {
    for (let i = 0; i < 300; i++) {
      const raw = JSON.parse(d.serialiseEvent(i));
      expect(typeof raw.timestamp).toBe(i % 3 === 0 ? 'number' : 'string');
      const r = normaliseEvent(raw);
      expect(r.ok && r.event.occurredAtMs).toBe(d.timestampAt(i));
    }
    const differing = events.filter((e, i) => JSON.parse(d.serialiseEvent(i)).timestamp !== e.timestamp);
    expect(differing).toEqual([]);
    const range = d.serialiseRange(990, 1010).json;
    expect(range).toBe(Array.from({ length: 20 }, (_, k) => d.serialiseEvent(990 + k)).join(','));
  });

  it('is deterministic for a seed, different for another, and maps ids and positions back to indices', () => {
    const again = createDataset({ events: N, seed: 42 });
    const other = createDataset({ events: N, seed: 43 });
    for (const i of [0, 1, 2, 777, 123_456, N - 1]) {
      expect(again.serialiseEvent(i)).toBe(d.serialiseEvent(i));
      expect(other.idAt(i)).not.toBe(d.idAt(i));
      expect(d.indexOfId(d.idAt(i))).toBe(i);
      expect(d.indexAfter(d.timestampAt(i), d.idAt(i))).toBe(i + 1);
    }
    expect(d.indexOfId(other.idAt(5))).toBeNull();
    expect(d.indexOfId('not-an-id')).toBeNull();
  });
});

describe('per-event faults', () => {
  const faulty = createDataset({
    events: 50_000,
    seed: 3,
    faults: {
      malformedTimestampRate: 0.01,
      missingFieldRate: 0.01,
      epochSecondsRate: 0.01,
      controlCharRate: 0.01,
    },
  });

  it('decides faults per index, so the set of rejects is known in advance and matches the normaliser', () => {
    const rejected = new Set(faulty.rejectedIndices());
    expect(rejected.size).toBeGreaterThan(700);
    expect(rejected.size).toBeLessThan(1300);
    expect(faulty.expectedValidCount()).toBe(50_000 - rejected.size);
    const kinds = new Set<string>();
    const wrong: string[] = [];
    for (let i = 0; i < 50_000; i++) {
      const f = faulty.faultFor(i);
      if (f) kinds.add(f.kind);
      const raw = JSON.parse(faulty.serialiseEvent(i));
      const r = normaliseEvent(raw);
      // A faulty event keeps its id; a valid one keeps its instant.
      if (
        r.ok === rejected.has(i) ||
        raw.id !== faulty.idAt(i) ||
        (r.ok && r.event.occurredAtMs !== faulty.timestampAt(i))
      ) {
        wrong.push(`index ${i} ${JSON.stringify(f)}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(kinds).toEqual(new Set(['malformedTimestamp', 'missingField', 'epochSeconds', 'controlChar']));
    // The same fault every time: a second data set with the same seed agrees.
    const twin = createDataset({ events: 50_000, seed: 3, faults: faulty.faultRates });
    expect(twin.rejectedIndices()).toEqual([...rejected]);
  });
});

describe('a skewed timestamp distribution (120,000 events, 90% in 3 bursts)', () => {
  const M = 120_000;
  const skewed = createDataset({ events: M, seed: 42, skew: { share: 0.9, bursts: 3 } });
  const even = createDataset({ events: M, seed: 42 });
  const all = Array.from({ length: M }, (_, i) => skewed.eventAt(i));

  it('bunches the share of events into the bursts, each about a minute long, and still spans the data set', () => {
    const perMinute = new Map<number, number>();
    for (const e of all) {
      const minute = Math.floor(e.timestampMs / 60_000);
      perMinute.set(minute, (perMinute.get(minute) ?? 0) + 1);
    }
    // 36,000 events a burst at 2 ms each: 72 s, so at most two minutes each.
    const dense = [...perMinute.values()].filter((n) => n >= 500);
    expect(dense.length).toBeGreaterThanOrEqual(3);
    expect(dense.length).toBeLessThanOrEqual(6);
    const inDense = dense.reduce((a, b) => a + b, 0);
    expect(inDense).toBeGreaterThanOrEqual(108_000);
    expect(inDense).toBeLessThan(108_010);
    expect(all[0]!.timestampMs).toBeLessThanOrEqual(DATASET_END_MS);
    expect(all.at(-1)!.timestampMs).toBeGreaterThanOrEqual(DATASET_START_MS);
    expect(all.at(-1)!.timestampMs).toBeLessThan(DATASET_START_MS + 86_400_000);
  });

  it('keeps the order: newest first, ties by id descending, positions resolving both ways', () => {
    const disordered: number[] = [];
    let ties = 0;
    for (let i = 1; i < M; i++) {
      const a = all[i - 1]!;
      const b = all[i]!;
      if (b.timestampMs === a.timestampMs) ties++;
      if (!(b.timestampMs < a.timestampMs || (b.timestampMs === a.timestampMs && b.id < a.id)))
        disordered.push(i);
    }
    expect(disordered).toEqual([]);
    // About one tie per thousand events, bursts included.
    expect(ties).toBeGreaterThan(60);
    expect(ties).toBeLessThan(250);
    for (let i = 1; i < M; i += 997) {
      expect(skewed.indexAfter(all[i]!.timestampMs, all[i]!.id)).toBe(i + 1);
      expect(skewed.indexOfId(all[i]!.id)).toBe(i);
      let first = i;
      while (first > 0 && all[first - 1]!.timestampMs === all[i]!.timestampMs) first--;
      expect(skewed.indexAtOrBefore(all[i]!.timestampMs)).toBe(first);
    }
    const range = skewed.serialiseRange(40_000, 45_000).json;
    expect(range).toBe(Array.from({ length: 5000 }, (_, k) => skewed.serialiseEvent(40_000 + k)).join(','));
  });

  it('changes only instants and order: the same events, sessions, users and type totals', () => {
    const signature = (e: ReturnType<typeof even.eventAt>) =>
      `${e.id}|${e.sessionId}|${e.userId}|${e.type}|${e.name}|${e.session.deviceType}|${e.session.browser}`;
    const a = all.map(signature).sort();
    const b = Array.from({ length: M }, (_, i) => signature(even.eventAt(i))).sort();
    expect(a).toEqual(b);
    expect(skewed.sessionCount).toBe(even.sessionCount);
  });

  it('refuses a share outside 0..1 or a burst count below one', () => {
    expect(() => createDataset({ events: 10, seed: 1, skew: { share: 1, bursts: 3 } })).toThrow(RangeError);
    expect(() => createDataset({ events: 10, seed: 1, skew: { share: 0.5, bursts: 0 } })).toThrow(RangeError);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BuiltCursorMode, parseSimulatorArgs, startSimulator } from '#local/simulator/index.ts';
import { cursorFromPosition, decodeCursor, encodeCursor, refreshCursor } from '#shared/cursor.ts';
import { eventsUrl, instantOf, type PageBody, request, sleep } from './http.ts';

describe('a full walk of 60,000 events with limit=5000', () => {
  let sim: Awaited<ReturnType<typeof startSimulator>>;
  beforeAll(async () => {
    sim = await startSimulator({ port: 0, latencyMs: 0, events: 60_000, seed: 7, rateLimit: 0 });
  });
  afterAll(async () => {
    await sim.close();
  });

  it('returns every id exactly once in strictly descending (timestamp, id) order over 12 pages', async () => {
    const ids: string[] = [];
    const instants: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    let last: PageBody | null = null;
    do {
      const res = await request(eventsUrl(sim.url, cursor ? { limit: 5000, cursor } : { limit: 5000 }));
      expect(res.status).toBe(200);
      last = JSON.parse(res.text) as PageBody;
      pages++;
      for (const e of last.data) {
        ids.push(e.id as string);
        instants.push(instantOf(e.timestamp));
      }
      cursor = last.pagination.nextCursor;
      if (cursor) {
        const c = decodeCursor(cursor);
        expect(c.id).toBe(ids.at(-1));
        expect(c.ts).toBe(instants.at(-1));
      }
    } while (cursor);
    expect(pages).toBe(12);
    expect(last.pagination.hasMore).toBe(false);
    expect(last.pagination.nextCursor).toBeNull();
    expect(ids.length).toBe(60_000);
    expect(new Set(ids).size).toBe(60_000);
    let ties = 0;
    const disordered: number[] = [];
    for (let i = 1; i < ids.length; i++) {
      const ordered =
        instants[i]! < instants[i - 1]! || (instants[i] === instants[i - 1] && ids[i]! < ids[i - 1]!);
      if (!ordered) disordered.push(i);
      if (instants[i] === instants[i - 1]) ties++;
    }
    expect(disordered).toEqual([]);
    expect(ties).toBeGreaterThan(0);
    // The walk sees exactly what the exported data set says.
    expect(ids[12_345]).toBe(sim.dataset.idAt(12_345));
    expect(instants[12_345]).toBe(sim.dataset.timestampAt(12_345));
  });

  it('continues strictly after a position inside a run of equal timestamps', async () => {
    const d = sim.dataset;
    let i = 1;
    while (d.timestampAt(i) !== d.timestampAt(i - 1)) i++;
    // Cursor on the first event of a tie: the next page must start with its tied neighbour.
    const cursor = cursorFromPosition({ ts: d.timestampAt(i - 1), id: d.idAt(i - 1) }, Date.now());
    const body = JSON.parse((await request(eventsUrl(sim.url, { limit: 2, cursor }))).text) as PageBody;
    expect(body.data.map((e) => e.id)).toEqual([d.idAt(i), d.idAt(i + 1)]);
  });

  it('serves an empty last page for a cursor past the end', async () => {
    const cursor = cursorFromPosition({ ts: 0, id: '0' }, Date.now());
    const body = JSON.parse((await request(eventsUrl(sim.url, { cursor }))).text) as PageBody;
    expect(body.data).toEqual([]);
    expect(body.pagination).toMatchObject({ hasMore: false, nextCursor: null });
    expect(body.meta.returned).toBe(0);
  });
});

describe('limits and cursors', () => {
  let sim: Awaited<ReturnType<typeof startSimulator>>;
  beforeAll(async () => {
    sim = await startSimulator({
      port: 0,
      latencyMs: 0,
      events: 20_000,
      rateLimit: 0,
      timeScale: 116,
      cacheTtlSeconds: 0,
    });
  });
  afterAll(async () => {
    await sim.close();
  });

  const normalise = (text: string) => {
    const body = JSON.parse(text) as PageBody;
    const c = decodeCursor(body.pagination.nextCursor!);
    body.pagination.nextCursor = encodeCursor({ ...c, exp: 0 });
    body.meta.requestId = '';
    return JSON.stringify(body);
  };

  it('caps limit at 5000: limit=10000 gives the same bytes as limit=5000 apart from requestId and exp', async () => {
    const a = await request(eventsUrl(sim.url, { limit: 5000 }));
    const b = await request(eventsUrl(sim.url, { limit: 10000 }));
    expect(JSON.parse(b.text).pagination.limit).toBe(5000);
    expect(normalise(b.text)).toBe(normalise(a.text));
    expect(b.text.length).toBe(a.text.length);
  });

  it('defaults to 100, ignores unknown parameters and rejects a non-numeric or zero limit', async () => {
    const plain = JSON.parse((await request(eventsUrl(sim.url, { offset: 500, sort: 'asc', page: 3 }))).text);
    expect(plain.pagination.limit).toBe(100);
    expect(plain.data.length).toBe(100);
    expect(plain.data[0].id).toBe(sim.dataset.idAt(0));
    for (const limit of ['0', 'abc', '-5', '2.5']) {
      const res = await request(eventsUrl(sim.url, { limit }));
      expect(res.status, limit).toBe(400);
      expect(JSON.parse(res.text)).toMatchObject({ error: 'Bad Request', code: 'INVALID_LIMIT' });
      expect(JSON.parse(res.text).message).toContain(`'${limit}'`);
    }
  });

  it('refuses an expired cursor with the minutes, accepts a refreshed one, and refuses garbage', async () => {
    // timeScale 116: the 116 s TTL is 1 s of real time.
    const first = JSON.parse((await request(eventsUrl(sim.url, { limit: 3 }))).text) as PageBody;
    expect(first.pagination.cursorExpiresIn).toBe(1);
    const cursor = first.pagination.nextCursor!;
    expect(decodeCursor(cursor).exp - Date.now()).toBeLessThanOrEqual(1000);
    await sleep(1300);
    const expired = await request(eventsUrl(sim.url, { limit: 3, cursor }));
    expect(expired.status).toBe(400);
    const body = JSON.parse(expired.text);
    expect(body).toMatchObject({ error: 'Bad Request', code: 'CURSOR_EXPIRED' });
    expect(body.message).toMatch(/^Cursor expired \d+ minute\(s\) ago$/);

    const refreshed = await request(
      eventsUrl(sim.url, { limit: 3, cursor: refreshCursor(cursor, Date.now(), 60_000) }),
    );
    expect(refreshed.status).toBe(200);
    expect((JSON.parse(refreshed.text) as PageBody).data[0]!.id).toBe(sim.dataset.idAt(3));

    for (const bad of [
      'not-a-cursor!',
      'eyJmb28iOjF9',
      Buffer.from('{"id":"x","ts":1,"v":9,"exp":1}').toString('base64'),
    ]) {
      const res = await request(eventsUrl(sim.url, { cursor: bad }));
      expect(res.status, bad).toBe(400);
      expect(JSON.parse(res.text)).toEqual({
        error: 'Bad Request',
        message: 'Invalid cursor format',
        code: 'CURSOR_INVALID_FORMAT',
      });
    }
  });
});

describe('rejectRefreshedCursors', () => {
  let sim: Awaited<ReturnType<typeof startSimulator>>;
  beforeAll(async () => {
    sim = await startSimulator({
      port: 0,
      latencyMs: 0,
      events: 5_000,
      rateLimit: 0,
      rejectRefreshedCursors: true,
    });
  });
  afterAll(async () => {
    await sim.close();
  });

  it('accepts the cursor as issued and refuses a refreshed or rebuilt one with CURSOR_EXPIRED', async () => {
    const page = JSON.parse((await request(eventsUrl(sim.url, { limit: 10 }))).text) as PageBody;
    const cursor = page.pagination.nextCursor!;
    const c = decodeCursor(cursor);
    const refreshed = refreshCursor(cursor, Date.now(), 200_000);
    const rebuilt = cursorFromPosition({ ts: c.ts, id: c.id }, Date.now() + 5);
    for (const bad of [refreshed, rebuilt]) {
      const res = await request(eventsUrl(sim.url, { limit: 10, cursor: bad }));
      expect(res.status).toBe(400);
      expect(JSON.parse(res.text).code).toBe('CURSOR_EXPIRED');
    }
    expect((await request(eventsUrl(sim.url, { limit: 10, cursor }))).status).toBe(200);
    expect(sim.stats().faults.refreshedCursorRejected).toBe(2);
  });
});

describe('built cursors {"id":"00000000-...","ts":<ms>}', () => {
  const ZERO_ID = '00000000-0000-0000-0000-000000000000';
  const sims: Array<Awaited<ReturnType<typeof startSimulator>>> = [];
  async function simWith(builtCursors?: BuiltCursorMode) {
    const s = await startSimulator({
      port: 0,
      latencyMs: 0,
      events: 60_000,
      seed: 7,
      rateLimit: 0,
      builtCursors,
    });
    sims.push(s);
    return s;
  }
  afterAll(async () => {
    await Promise.all(sims.map((s) => s.close()));
  });
  const built = (ts: number) => encodeCursor({ id: ZERO_ID, ts, v: 2, exp: Date.now() + 600_000 });
  async function firstIds(s: Awaited<ReturnType<typeof startSimulator>>, cursor: string, limit = 3) {
    const res = await request(eventsUrl(s.url, { limit, cursor }));
    expect(res.status).toBe(200);
    return (JSON.parse(res.text) as PageBody).data.map((e) => e.id);
  }
  /** The first index of a run of equal timestamps, and the index after the run. */
  function tieRun(d: Awaited<ReturnType<typeof startSimulator>>['dataset']) {
    let i = 1;
    while (d.timestampAt(i) !== d.timestampAt(i - 1)) i++;
    const start = i - 1;
    let end = i + 1;
    while (d.timestampAt(end) === d.timestampAt(start)) end++;
    return { start, end, ts: d.timestampAt(start) };
  }

  it('by default start at the first row at their ts: the rows sharing that instant are included', async () => {
    const s = await simWith();
    const run = tieRun(s.dataset);
    expect(await firstIds(s, built(run.ts))).toEqual([0, 1, 2].map((k) => s.dataset.idAt(run.start + k)));
  });

  it('with by-ts-id start strictly after (ts, id): with the zero id, after every row at that instant', async () => {
    const s = await simWith('by-ts-id');
    const run = tieRun(s.dataset);
    expect(await firstIds(s, built(run.ts))).toEqual([0, 1, 2].map((k) => s.dataset.idAt(run.end + k)));
  });

  it('read the same either way between instants, before the newest and past the oldest row', async () => {
    const byTs = await simWith('by-ts');
    const byTsId = await simWith('by-ts-id');
    const d = byTs.dataset;
    let i = 1000;
    while (d.timestampAt(i) - d.timestampAt(i + 1) < 2) i++;
    const between = d.timestampAt(i) - 1;
    for (const s of [byTs, byTsId]) {
      expect(await firstIds(s, built(between))).toEqual([d.idAt(i + 1), d.idAt(i + 2), d.idAt(i + 3)]);
      expect(await firstIds(s, built(d.timestampAt(0) + 60_000))).toEqual([d.idAt(0), d.idAt(1), d.idAt(2)]);
      const past = JSON.parse((await request(eventsUrl(s.url, { cursor: built(0) }))).text) as PageBody;
      expect(past.data).toEqual([]);
      expect(past.pagination).toMatchObject({ hasMore: false, nextCursor: null });
    }
  });

  it('chains started from built cursors cover the data set exactly under both readings', async () => {
    // Three chains from built cursors at instants that hold ties, each read up to the next one's
    // instant from both sides of the boundary and de-duplicated, as a partitioned reader must.
    for (const mode of ['by-ts', 'by-ts-id'] as const) {
      const s = await simWith(mode);
      const d = s.dataset;
      const boundaries = [0, 1, 2].map((k) => {
        let i = 20_000 * k + 5_000;
        while (d.timestampAt(i) !== d.timestampAt(i + 1)) i++;
        return d.timestampAt(i);
      });
      const seen = new Set<string>();
      for (const [c, from] of [Number.MAX_SAFE_INTEGER, ...boundaries].entries()) {
        const until = boundaries[c] ?? Number.NEGATIVE_INFINITY;
        let cursor: string | null = from === Number.MAX_SAFE_INTEGER ? null : built(from);
        let done = false;
        do {
          const res = await request(eventsUrl(s.url, cursor ? { limit: 5000, cursor } : { limit: 5000 }));
          const body = JSON.parse(res.text) as PageBody;
          for (const e of body.data) {
            const ts = instantOf(e.timestamp);
            if (ts < until) done = true;
            else seen.add(e.id as string);
          }
          cursor = body.pagination.nextCursor;
        } while (cursor && !done);
      }
      expect(seen.size, mode).toBe(60_000);
    }
  });

  it('refuse answers 400 CURSOR_INVALID_FORMAT and refuse-502 the load balancer 502; issued cursors still pass', async () => {
    for (const mode of ['refuse', 'refuse-502'] as const) {
      const s = await simWith(mode);
      const page = JSON.parse((await request(eventsUrl(s.url, { limit: 10 }))).text) as PageBody;
      expect(
        (await request(eventsUrl(s.url, { limit: 10, cursor: page.pagination.nextCursor! }))).status,
      ).toBe(200);
      const rebuilt = cursorFromPosition(decodeCursor(page.pagination.nextCursor!), Date.now());
      expect((await request(eventsUrl(s.url, { limit: 10, cursor: rebuilt }))).status).toBe(200);
      const res = await request(eventsUrl(s.url, { cursor: built(s.dataset.timestampAt(100)) }));
      if (mode === 'refuse') {
        expect(res.status).toBe(400);
        expect(JSON.parse(res.text)).toEqual({
          error: 'Bad Request',
          message: 'Invalid cursor format',
          code: 'CURSOR_INVALID_FORMAT',
        });
      } else {
        expect(res.status).toBe(502);
        expect(res.headers.server).toBe('awselb/2.0');
        expect(res.text).toContain('<h1>502 Bad Gateway</h1>');
      }
      // A real id at the wrong instant is built too.
      const moved = encodeCursor({
        id: s.dataset.idAt(5),
        ts: s.dataset.timestampAt(5) - 1,
        v: 2,
        exp: Date.now() + 60_000,
      });
      expect((await request(eventsUrl(s.url, { cursor: moved }))).status).toBe(mode === 'refuse' ? 400 : 502);
    }
  });
});

describe('a skewed data set over HTTP', () => {
  it('walks every id once in strictly descending (timestamp, id) order, most of them in two bursts', async () => {
    const s = await startSimulator({
      port: 0,
      latencyMs: 0,
      events: 40_000,
      seed: 5,
      rateLimit: 0,
      timestampSkew: 0.95,
      skewBursts: 2,
    });
    try {
      const ids: string[] = [];
      const instants: number[] = [];
      let cursor: string | null = null;
      do {
        const res = await request(eventsUrl(s.url, cursor ? { limit: 5000, cursor } : { limit: 5000 }));
        const body = JSON.parse(res.text) as PageBody;
        for (const e of body.data) {
          ids.push(e.id as string);
          instants.push(instantOf(e.timestamp));
        }
        cursor = body.pagination.nextCursor;
      } while (cursor);
      expect(new Set(ids).size).toBe(40_000);
      const disordered = ids.flatMap((id, i) =>
        i === 0 || instants[i]! < instants[i - 1]! || (instants[i] === instants[i - 1] && id < ids[i - 1]!)
          ? []
          : [i],
      );
      expect(disordered).toEqual([]);
      const minutes = new Map<number, number>();
      for (const t of instants)
        minutes.set(Math.floor(t / 60_000), (minutes.get(Math.floor(t / 60_000)) ?? 0) + 1);
      const dense = [...minutes.values()].filter((n) => n >= 1000);
      expect(dense.length).toBeLessThanOrEqual(4);
      expect(dense.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(38_000);
    } finally {
      await s.close();
    }
  });

  it('is switched on from the command line', () => {
    expect(
      parseSimulatorArgs(['--timestamp-skew', '0.9', '--skew-bursts', '4', '--built-cursors', 'refuse']),
    ).toMatchObject({
      timestampSkew: 0.9,
      skewBursts: 4,
      builtCursors: 'refuse',
    });
    expect(parseSimulatorArgs([])).toMatchObject({ timestampSkew: 0, builtCursors: 'by-ts' });
    expect(() => parseSimulatorArgs(['--timestamp-skew', '1'])).toThrow(
      /--timestamp-skew: pass a share from 0/,
    );
    expect(() => parseSimulatorArgs(['--built-cursors', 'maybe'])).toThrow(
      /--built-cursors: pass one of by-ts, by-ts-id, refuse, refuse-502/,
    );
  });
});

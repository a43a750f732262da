import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSimulator } from '#local/simulator/index.ts';
import { cursorFromPosition, decodeCursor, encodeCursor, refreshCursor } from '#shared/cursor.ts';
import { eventsUrl, instantOf, type PageBody, request, sleep } from './http.ts';

describe('a full walk of 60,000 events with limit=5000', () => {
  let sim: Awaited<ReturnType<typeof startSimulator>>;
  beforeAll(async () => {
    sim = await startSimulator({ port: 0, events: 60_000, seed: 7, rateLimit: 0 });
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
    sim = await startSimulator({ port: 0, events: 20_000, rateLimit: 0, timeScale: 116, cacheTtlSeconds: 0 });
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
    sim = await startSimulator({ port: 0, events: 5_000, rateLimit: 0, rejectRefreshedCursors: true });
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

import { afterEach, describe, expect, it } from 'vitest';
import { CHAOS_PROFILE, type SimulatorOptionsInput, startSimulator } from '#local/simulator/index.ts';
import {
  DEFAULT_LATENCY,
  LATENCY_PAGE_EVENTS,
  LIVE_LATENCY_JITTER_MS,
  LIVE_LATENCY_MS,
} from '#local/simulator/latency.ts';
import { parseSimulatorArgs, resolveSimulatorOptions } from '#local/simulator/options.ts';
import { decodeCursor } from '#shared/cursor.ts';
import { normaliseEvent, normalisePage } from '#shared/upstream/normalise.ts';
import { eventsUrl, type PageBody, request } from './http.ts';

let sim: Awaited<ReturnType<typeof startSimulator>> | null = null;
async function start(options: SimulatorOptionsInput) {
  sim = await startSimulator({ port: 0, latencyMs: 0, events: 2_000, rateLimit: 0, ...options });
  return sim;
}
afterEach(async () => {
  await sim?.close();
  sim = null;
});

async function page(url: string): Promise<PageBody> {
  const res = await request(url);
  expect(res.status).toBe(200);
  return JSON.parse(res.text) as PageBody;
}

describe('per-event data faults', () => {
  it('malformedTimestampRate makes the same events unparseable on every request, ids unchanged', async () => {
    const s = await start({ malformedTimestampRate: 0.2 });
    const a = await page(eventsUrl(s.url, { limit: 500 }));
    const b = await page(eventsUrl(s.url, { limit: 500, other: 1 }));
    expect(b.data).toEqual(a.data);
    const rejected = a.data.flatMap((e, i) => (normaliseEvent(e).ok ? [] : [i]));
    expect(rejected.length).toBeGreaterThan(50);
    expect(rejected).toEqual(a.data.flatMap((_, i) => (s.dataset.isValid(i) ? [] : [i])));
    expect(a.data.map((e) => e.id)).toEqual(a.data.map((_, i) => s.dataset.idAt(i)));
    expect(s.stats().faults.malformedTimestamp).toBe(rejected.length * 2);
  });

  it('missingFieldRate leaves out one required field', async () => {
    const s = await start({ missingFieldRate: 1 });
    const { data } = await page(eventsUrl(s.url, { limit: 200 }));
    const required = ['sessionId', 'userId', 'type', 'name', 'timestamp'];
    for (const e of data) {
      expect(required.filter((k) => !(k in e)).length).toBe(1);
      expect(normaliseEvent(e).ok).toBe(false);
    }
    expect(s.dataset.expectedValidCount()).toBe(0);
  });

  it('epochSecondsRate and controlCharRate change the form, not the instant', async () => {
    for (const knob of ['epochSecondsRate', 'controlCharRate'] as const) {
      const s = await start({ [knob]: 1 });
      const { data } = await page(eventsUrl(s.url, { limit: 100 }));
      data.forEach((e, i) => {
        if (knob === 'epochSecondsRate') expect(e.timestamp as number).toBeLessThan(1e11);
        else expect(e.timestamp as string).not.toMatch(/^\d{4}-\d{2}-\d{2}T[\d:.]+Z$/);
        const r = normaliseEvent(e);
        expect(r.ok && r.event.occurredAtMs).toBe(s.dataset.timestampAt(i));
      });
      expect(s.dataset.expectedValidCount()).toBe(2_000);
      await s.close();
      sim = null;
    }
  });
});

describe('per-request faults', () => {
  it('duplicateRowRate repeats rows from just before the cursor', async () => {
    const s = await start({ duplicateRowRate: 1 });
    const first = await page(eventsUrl(s.url, { limit: 100 }));
    const second = await page(eventsUrl(s.url, { limit: 100, cursor: first.pagination.nextCursor! }));
    const seen = new Set(first.data.map((e) => e.id));
    const repeated = second.data.filter((e) => seen.has(e.id as string)).length;
    expect(repeated).toBeGreaterThanOrEqual(1);
    expect(repeated).toBeLessThanOrEqual(25);
    // The repeats lead the page and are the rows right before the cursor, in order.
    expect(second.data.slice(0, repeated)).toEqual(first.data.slice(100 - repeated));
    expect(second.data.length).toBe(100);
    expect(s.stats().faults.duplicateRows).toBe(repeated);
    // The cursor still points at the last row served, so nothing is skipped.
    expect(decodeCursor(second.pagination.nextCursor!).id).toBe(second.data.at(-1)!.id);
  });

  it('transientErrorRate answers load-balancer 5xx errors', async () => {
    const s = await start({ transientErrorRate: 1 });
    const statuses = new Set<number>();
    for (let i = 0; i < 12; i++) {
      const res = await request(eventsUrl(s.url));
      statuses.add(res.status);
      expect(res.headers.server).toBe('awselb/2.0');
      expect(res.headers['content-type']).toBe('text/html');
      expect(res.text).toContain(`<h1>${res.status} `);
    }
    expect([...statuses].every((x) => [500, 502, 503, 504].includes(x))).toBe(true);
    expect(statuses.size).toBeGreaterThan(1);
    expect(s.stats().faults.transientError).toBe(12);
  });

  it('truncatedBodyRate cuts the JSON short with a consistent Content-Length', async () => {
    const s = await start({ truncatedBodyRate: 1 });
    const res = await request(eventsUrl(s.url, { limit: 50 }));
    expect(res.status).toBe(200);
    expect(Number(res.headers['content-length'])).toBe(Buffer.byteLength(res.text));
    expect(() => JSON.parse(res.text)).toThrow();
    expect(s.stats().faults.truncatedBody).toBe(1);
  });

  it('is reproducible: the same request sequence meets the same faults', async () => {
    const run = async () => {
      const s = await start({ transientErrorRate: 0.5, seed: 9 });
      const out: number[] = [];
      for (let i = 0; i < 20; i++) out.push((await request(eventsUrl(s.url, { limit: 1 }))).status);
      await s.close();
      sim = null;
      return out;
    };
    const first = await run();
    expect(new Set(first)).not.toEqual(new Set([200]));
    expect(await run()).toEqual(first);
  });
});

describe('chaos profile and cache', () => {
  it('chaos switches the documented rates on; an explicit rate still wins', async () => {
    const s = await start({ chaos: true, transientErrorRate: 0 });
    expect(s.options).toMatchObject({ ...CHAOS_PROFILE, transientErrorRate: 0 });
    expect(s.dataset.expectedValidCount()).toBeLessThan(2_000);
    // Over a full walk the rejects are exactly the data set's prediction.
    const rejectedIds = new Set<string>();
    let cursor: string | null = null;
    do {
      const res = await request(eventsUrl(s.url, cursor ? { limit: 5000, cursor } : { limit: 5000 }));
      if (res.status !== 200) continue;
      let body: PageBody;
      try {
        body = JSON.parse(res.text) as PageBody;
      } catch {
        continue; // a truncated body: ask again
      }
      for (const r of normalisePage(body.data).rejects) rejectedIds.add((r.raw as { id: string }).id);
      cursor = body.pagination.nextCursor;
    } while (cursor);
    expect(rejectedIds).toEqual(new Set(s.dataset.rejectedIndices().map((i) => s.dataset.idAt(i))));
  });

  it('serves an identical request within the cache TTL as a HIT with the same body', async () => {
    const s = await start({});
    const url = eventsUrl(s.url, { limit: 20 });
    const a = await request(url);
    const b = await request(url);
    expect(a.headers['x-cache']).toBe('MISS');
    expect(b.headers['x-cache']).toBe('HIT');
    expect(b.text).toBe(a.text);
    expect(b.headers.etag).toBe(a.headers.etag);
    expect(b.headers['x-request-id']).toBe(JSON.parse(b.text).meta.requestId);
    expect((await request(url, { apiKey: 'local-dev-key' })).headers['x-cache']).toBe('HIT');
    expect((await request(eventsUrl(s.url, { limit: 21 }))).headers['x-cache']).toBe('MISS');
    expect(s.stats().cacheHits).toBe(2);
  });
});

describe('latency', () => {
  // The simulator accounts the real (scaled) milliseconds it waited in its stats; asserting those
  // checks the model without timing anything on a shared machine.
  async function latencies(options: SimulatorOptionsInput, limits: number[]): Promise<number[]> {
    const s = await start({ events: 20_000, cacheTtlSeconds: 0, ...options });
    const out: number[] = [];
    let before = 0;
    for (const limit of limits) {
      expect((await request(eventsUrl(s.url, { limit }))).status).toBe(200);
      const total = s.stats().faults.latencyMsTotal;
      out.push(total - before);
      before = total;
    }
    return out;
  }

  it('takes latencyMs for a 5000-event page and proportionally less for smaller pages, divided by timeScale', async () => {
    const got = await latencies({ latencyMs: 1000, timeScale: 10 }, [5000, 500, 50, 1]);
    expect(LATENCY_PAGE_EVENTS).toBe(5000);
    expect(got.map((ms) => Math.round(ms * 1000) / 1000)).toEqual([100, 10, 1, 0.02]);
  });

  it('scales with timeScale like every other duration', async () => {
    const [scale1] = await latencies({ latencyMs: 40 }, [5000]);
    await sim?.close();
    const [scale8] = await latencies({ latencyMs: 40, timeScale: 8 }, [5000]);
    expect(scale1).toBeCloseTo(40, 9);
    expect(scale8).toBeCloseTo(5, 9);
  });

  it('adds a jitter bounded by latencyJitterMs, in proportion too, reproducible from the seed', async () => {
    const full = await latencies(
      { latencyMs: 1000, latencyJitterMs: 500, timeScale: 100, seed: 3 },
      [5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000],
    );
    for (const ms of full) {
      expect(ms).toBeGreaterThanOrEqual(10);
      expect(ms).toBeLessThan(15);
    }
    expect(new Set(full).size).toBeGreaterThan(5);
    await sim?.close();
    const again = await latencies(
      { latencyMs: 1000, latencyJitterMs: 500, timeScale: 100, seed: 3 },
      [5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000],
    );
    expect(again).toEqual(full);
    await sim?.close();
    const small = await latencies(
      { latencyMs: 1000, latencyJitterMs: 500, timeScale: 100 },
      [1000, 1000, 1000],
    );
    for (const ms of small) {
      expect(ms).toBeGreaterThanOrEqual(2);
      expect(ms).toBeLessThan(3);
    }
  });

  it('0 disables it, and answers without rows (errors, an empty last page) take none', async () => {
    expect(await latencies({ latencyMs: 0, latencyJitterMs: 0 }, [5000, 100])).toEqual([0, 0]);
    await sim?.close();
    const s = await start({ events: 100, latencyMs: 1000, timeScale: 10 });
    expect((await request(eventsUrl(s.url, { limit: 0 }))).status).toBe(400);
    expect((await request(eventsUrl(s.url, { cursor: 'garbage' }))).status).toBe(400);
    expect(s.stats().faults.latencyMsTotal).toBe(0);
  });

  it("offers the live service's figures as a preset, 'live' / --latency-ms live, and keeps the default at none", () => {
    expect(LIVE_LATENCY_MS).toBe(3500);
    expect(LIVE_LATENCY_MS + LIVE_LATENCY_JITTER_MS).toBe(4000);
    expect(resolveSimulatorOptions({ latencyMs: 'live' })).toMatchObject({
      latencyMs: 3500,
      latencyJitterMs: 500,
    });
    expect(resolveSimulatorOptions({ latencyMs: 'live', latencyJitterMs: 0 })).toMatchObject({
      latencyMs: 3500,
      latencyJitterMs: 0,
    });
    expect(parseSimulatorArgs(['--latency-ms', 'live'])).toMatchObject({
      latencyMs: 3500,
      latencyJitterMs: 500,
    });
    expect(parseSimulatorArgs(['--latency-ms', '0'])).toMatchObject({ latencyMs: 0, latencyJitterMs: 0 });
    expect(() => parseSimulatorArgs(['--latency-ms', 'slow'])).toThrow(
      'Option --latency-ms must be a number or live, got "slow": write --latency-ms MS|live.',
    );
    // The live service's latency unless told otherwise (#14).
    expect(DEFAULT_LATENCY).toBe('live');
    expect(resolveSimulatorOptions({})).toMatchObject({ latencyMs: 3500, latencyJitterMs: 500 });
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import { type GrowArgs, type RunningSimulator, startSimulator } from '#local/simulator/index.ts';
import { eventsUrl, type PageBody, request, sleep } from './http.ts';

/* Growth over HTTP: POST /__sim/grow, the growRate option, and a cursor issued before a growth. */

let sim: RunningSimulator | null = null;
afterEach(async () => {
  await sim?.close();
  sim = null;
});

async function page(url: string): Promise<PageBody> {
  const res = await request(url);
  expect(res.status).toBe(200);
  return JSON.parse(res.text) as PageBody;
}

describe('simulator growth over HTTP', () => {
  it('POST /__sim/grow adds events at once; a walk started before it neither skips nor repeats a row', async () => {
    const grown: unknown[] = [];
    sim = await startSimulator(
      { port: 0, events: 3000, rateLimit: 0, latencyMs: 0, cacheTtlSeconds: 0 },
      { onGrow: (args) => grown.push(args) },
    );
    const first = await page(eventsUrl(sim.url, { limit: 1000 }));
    const baseIds = Array.from({ length: 3000 }, (_, i) => sim!.dataset.idAt(i));
    const res = await request(
      `${sim.url.replace('/api/v1', '')}/__sim/grow?newer=500&late=20&lateSeconds=3600`,
      {
        method: 'POST',
      },
    );
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toMatchObject({ added: 520, total: 3520 });
    expect(grown).toEqual([{ newer: 500, lateWithin: 20, lateBeyond: 0, lookbackMs: 3_600_000 }]);
    // The walk goes on from its cursor: every base row after page one, plus the late rows below it.
    let cursor = first.pagination.nextCursor;
    const seen = first.data.map((e) => e.id as string);
    while (cursor) {
      const p = await page(eventsUrl(sim.url, { limit: 1000, cursor }));
      seen.push(...p.data.map((e) => e.id as string));
      cursor = p.pagination.nextCursor;
    }
    expect(new Set(seen).size).toBe(seen.length);
    for (const id of baseIds) expect(seen).toContain(id);
    // Page one now starts with the new rows, and says the new total.
    const again = await page(eventsUrl(sim.url, { limit: 10 }));
    expect(again.meta.total).toBe(3520);
    expect(again.data[0]?.id).toBe(sim.dataset.idAt(0));
    expect(baseIds).not.toContain(again.data[0]?.id);
  });

  it('refuses a bad growth with a 400 naming the parameter, and a GET with a 405', async () => {
    sim = await startSimulator({ port: 0, events: 100, rateLimit: 0, latencyMs: 0 });
    const root = sim.url.replace('/api/v1', '');
    const bad = await request(`${root}/__sim/grow?newer=-3`, { method: 'POST' });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('newer must be a whole number');
    const unknown = await request(`${root}/__sim/grow?count=3`, { method: 'POST' });
    expect(unknown.text).toContain('unknown parameter \\"count\\"');
    expect((await request(`${root}/__sim/grow?newer=3`)).status).toBe(405);
    expect(sim.dataset.total).toBe(100);
  });

  it('growRate adds events while it runs, a share of them late', async () => {
    const growths: GrowArgs[] = [];
    sim = await startSimulator(
      { port: 0, events: 1000, rateLimit: 0, latencyMs: 0, growRate: 50, timeScale: 10, growLateShare: 0.2 },
      { onGrow: (args) => growths.push(args) },
    );
    await sleep(600);
    const added = sim.dataset.grown;
    expect(added).toBeGreaterThan(50);
    const late = growths.reduce((n, g) => n + (g.lateWithin ?? 0), 0);
    const total = growths.reduce((n, g) => n + g.newer + (g.lateWithin ?? 0) + (g.lateBeyond ?? 0), 0);
    expect(total).toBe(added);
    // The share is carried over between ticks: within one event of a fifth of what was added.
    expect(Math.abs(late - 0.2 * added)).toBeLessThanOrEqual(1);
    expect(growths.every((g) => g.lookbackMs === 600_000)).toBe(true);
  });
});

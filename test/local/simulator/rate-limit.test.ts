import { afterEach, describe, expect, it } from 'vitest';
import { type SimulatorOptionsInput, startSimulator } from '#local/simulator/index.ts';
import { eventsUrl, request, sleep } from './http.ts';

let sim: Awaited<ReturnType<typeof startSimulator>> | null = null;
async function start(options: SimulatorOptionsInput) {
  sim = await startSimulator({ port: 0, latencyMs: 0, events: 1_000, ...options });
  return sim;
}
afterEach(async () => {
  await sim?.close();
  sim = null;
});

const exact = (h: Record<string, string>, name: string) => Number(h[name]);

describe('fixed window', () => {
  it('lets `limit` requests through, then answers 429 with the exact body and Retry-After == Reset', async () => {
    const s = await start({ rateLimit: 1, windowSeconds: 46 });
    const ok = await request(eventsUrl(s.url));
    expect(ok.status).toBe(200);
    expect(ok.headers['x-ratelimit-limit']).toBe('1');
    expect(ok.headers['x-ratelimit-remaining']).toBe('0');
    expect(ok.headers['x-ratelimit-reset']).toBe('46');
    const refused = await request(eventsUrl(s.url));
    expect(refused.status).toBe(429);
    expect(refused.text).toBe(
      '{"error":"Too Many Requests","message":"Rate limit exceeded. Try again in 46 seconds.","code":"RATE_LIMIT_EXCEEDED","rateLimit":{"limit":1,"remaining":0,"reset":46,"retryAfter":46}}',
    );
    expect(refused.headers['retry-after']).toBe(refused.headers['x-ratelimit-reset']);
    expect(refused.headers['x-ratelimit-remaining']).toBe('0');
    expect(refused.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(refused.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    // No exact headers at time scale 1: the header set is the live service's.
    expect(refused.headers['retry-after-exact']).toBeUndefined();
    expect(s.stats().rateLimited).toBe(1);
    expect(s.stats().byStatus).toEqual({ 200: 1, 429: 1 });
  });

  it('counts down remaining, resets the whole window at once, and counts HEAD and 404 event lookups', async () => {
    // 20 s scaled by 20: a 1 s window.
    const s = await start({ rateLimit: 3, windowSeconds: 20, timeScale: 20 });
    const a = await request(eventsUrl(s.url), { method: 'HEAD' });
    const b = await request(`${s.url}/events/export`);
    const c = await request(eventsUrl(s.url));
    expect([a.status, b.status, c.status]).toEqual([200, 404, 200]);
    expect([a, b, c].map((r) => r.headers['x-ratelimit-remaining'])).toEqual(['2', '1', '0']);
    const refused = await request(eventsUrl(s.url));
    expect(refused.status).toBe(429);
    const wait = exact(refused.headers, 'retry-after-exact');
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(1);
    expect(refused.headers['retry-after']).toBe(String(Math.ceil(wait)));
    await sleep(wait * 1000 + 50);
    // A fixed window frees every slot at once.
    const after = await Promise.all([1, 2, 3].map(() => request(eventsUrl(s.url))));
    expect(after.map((r) => r.status)).toEqual([200, 200, 200]);
  });

  it('sends scaled whole-second headers and the exact values when time-scaled', async () => {
    const s = await start({ rateLimit: 5, windowSeconds: 20, timeScale: 10 });
    const res = await request(eventsUrl(s.url));
    expect(res.headers['x-ratelimit-reset']).toBe('2');
    expect(exact(res.headers, 'x-ratelimit-reset-exact')).toBeGreaterThan(1.9);
    expect(exact(res.headers, 'x-ratelimit-reset-exact')).toBeLessThanOrEqual(2);
    expect(res.headers['x-cache-ttl']).toBe('3');
    expect(JSON.parse(res.text).pagination.cursorExpiresIn).toBe(11.6);
  });
});

describe('sliding window', () => {
  it('frees one slot when the oldest request leaves the window', async () => {
    const s = await start({ rateLimit: 2, windowSeconds: 20, timeScale: 20, windowMode: 'sliding' });
    expect((await request(eventsUrl(s.url))).status).toBe(200);
    await sleep(500);
    expect((await request(eventsUrl(s.url))).status).toBe(200);
    const refused = await request(eventsUrl(s.url));
    expect(refused.status).toBe(429);
    // The oldest entry is at least 0.5 s old in a 1 s window.
    const wait = exact(refused.headers, 'retry-after-exact');
    expect(wait).toBeLessThanOrEqual(0.5);
    await sleep(wait * 1000 + 50);
    expect((await request(eventsUrl(s.url))).status).toBe(200);
    // Unlike a fixed window, the second request still occupies its slot.
    expect((await request(eventsUrl(s.url))).status).toBe(429);
  });

  it('with countRejected, refused requests keep the window full', async () => {
    for (const countRejected of [false, true]) {
      // A 2 s window: wide margins so a slow machine cannot flip the outcome.
      const s = await start({
        rateLimit: 1,
        windowSeconds: 20,
        timeScale: 10,
        windowMode: 'sliding',
        countRejected,
      });
      expect((await request(eventsUrl(s.url))).status).toBe(200);
      await sleep(800);
      expect((await request(eventsUrl(s.url))).status).toBe(429);
      await sleep(1300);
      // 2.1 s after the first request: free unless the refused one (at 0.8 s) was counted.
      expect((await request(eventsUrl(s.url))).status, `countRejected=${countRejected}`).toBe(
        countRejected ? 429 : 200,
      );
      await s.close();
      sim = null;
    }
  });
});

describe('family readings over HTTP', () => {
  it('errorHeaders: a 5xx of the load balancer carries the headers; uncountedErrors: it does not spend the window', async () => {
    const s = await start({
      rateLimit: 5,
      windowSeconds: 60,
      transientErrorRate: 1,
      errorHeaders: true,
      uncountedErrors: true,
    });
    const a = await request(eventsUrl(s.url));
    const b = await request(`${s.url}/events/nope`);
    expect([a.status, b.status]).toEqual([expect.any(Number), 404]);
    expect(a.status).toBeGreaterThanOrEqual(500);
    expect(a.headers.server).toBe('awselb/2.0');
    expect(a.headers['x-ratelimit-remaining']).toBe('5');
    expect(b.headers['x-ratelimit-remaining']).toBe('5');
  });

  it('by default a 5xx has no rate-limit headers and spends a slot; resetRounding down floors Reset', async () => {
    const s = await start({
      rateLimit: 5,
      windowSeconds: 30,
      transientErrorRate: 1,
      resetRounding: 'down',
      timeScale: 1,
    });
    const a = await request(eventsUrl(s.url));
    expect(a.headers['x-ratelimit-remaining']).toBeUndefined();
    const b = await request(`${s.url}/events/nope`);
    expect(b.headers['x-ratelimit-remaining']).toBe('3');
    // 30 s less the few ms since the window opened, rounded down.
    expect(b.headers['x-ratelimit-reset']).toBe('29');
  });
});

describe('authentication and the disabled limiter', () => {
  it('answers 401 without a key and 403 with a wrong one, with JSON bodies and rate-limit headers', async () => {
    const s = await start({});
    const none = await request(eventsUrl(s.url), { apiKey: null });
    expect(none.status).toBe(401);
    expect(JSON.parse(none.text)).toMatchObject({ error: 'Unauthorized', code: 'MISSING_API_KEY' });
    expect(none.headers['x-ratelimit-limit']).toBe('10');
    const wrong = await request(eventsUrl(s.url), { apiKey: 'nope' });
    expect(wrong.status).toBe(403);
    expect(JSON.parse(wrong.text)).toMatchObject({ error: 'Forbidden', code: 'INVALID_API_KEY' });
    // Another key's requests do not spend the real key's budget.
    expect((await request(eventsUrl(s.url))).headers['x-ratelimit-remaining']).toBe('9');
    const unknown = await request(`${s.url.replace('/api/v1', '')}/nowhere`);
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.text).code).toBe('NOT_FOUND');
  });

  it('rateLimit 0 never refuses and sends no rate-limit headers', async () => {
    const s = await start({ rateLimit: 0 });
    const all = await Promise.all(Array.from({ length: 30 }, () => request(eventsUrl(s.url, { limit: 1 }))));
    expect(all.every((r) => r.status === 200)).toBe(true);
    expect(all[0]!.headers['x-ratelimit-limit']).toBeUndefined();
  });

  it('serves its stats at /__sim/stats without spending the limit', async () => {
    const s = await start({ rateLimit: 1 });
    await request(eventsUrl(s.url));
    const stats = await request(`${s.url.replace('/api/v1', '')}/__sim/stats`, { apiKey: null });
    expect(stats.status).toBe(200);
    expect(JSON.parse(stats.text)).toEqual(s.stats());
    expect(s.stats()).toMatchObject({ requests: 1, ok: 1, pages: 1, eventsServed: 100 });
  });
});

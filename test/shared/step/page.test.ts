import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { getCheckpoint } from '#shared/db/checkpoints.ts';
import { createDb } from '#shared/db/client.ts';
import { createStore } from '#shared/db/store.ts';
import {
  AuthError,
  CheckpointConflictError,
  CursorRejectedError,
  DataSyncError,
  InvocationDeadlineError,
  LeaseHeldError,
  UpstreamUnavailableError,
} from '#shared/errors.ts';
import type { StepDeps, StepOutput, StepStore } from '#shared/step/index.ts';
import { createDataSyncClient } from '#shared/upstream/client.ts';
import { createPipelineFixture, type PipelineFixture, storedInstants } from '#test/support/pipeline.ts';
import { stepPage } from '#test/support/step.ts';

async function counts(f: PipelineFixture, sourceId = 'default') {
  const [e] = await f.sql<{ n: number; d: number }[]>`
    select count(*)::int as n, count(distinct id)::int as d from events where source_id = ${sourceId}`;
  const [r] = await f.sql<
    { n: number }[]
  >`select count(*)::int as n from rejected_events where source_id = ${sourceId}`;
  const cp = await getCheckpoint(createDb(f.sql), sourceId);
  return { rows: e!.n, distinct: e!.d, rejects: r!.n, cp };
}

describe('runPage against a 60,000-event simulator and a real PostgreSQL', () => {
  let f: PipelineFixture;
  beforeAll(async () => {
    f = await createPipelineFixture({ events: 60_000 });
  });
  afterAll(() => f?.close());

  it('ingests every event exactly once with the simulator instants, then reports done', async () => {
    const outputs = await f.runToDone('exec-full');
    expect(outputs.at(-1)).toMatchObject({ done: true, nextCursor: null });
    expect(outputs.filter((o) => o.page.received > 0)).toHaveLength(12);
    const c = await counts(f);
    expect(c.rows).toBe(60_000);
    expect(c.distinct).toBe(60_000);
    expect(c.rejects).toBe(0);
    expect(c.cp).toMatchObject({
      status: 'complete',
      eventsInserted: 60_000,
      pages: 12,
      duplicatesSkipped: 0,
    });
    const stored = await storedInstants(f.sql);
    for (let i = 0; i < f.sim.dataset.total; i++) {
      expect(stored.get(f.sim.dataset.idAt(i))).toBe(f.sim.dataset.timestampAt(i));
    }
    // iteration counts invocations within the execution
    expect(outputs.map((o) => o.iteration)).toEqual(outputs.map((_, i) => i + 1));
  });

  it('returns done at once for a complete source, without a request', async () => {
    const before = f.sim.stats().requests;
    const out = await stepPage(f.deps(), { executionId: 'exec-again', state: { sourceId: 'default' } });
    expect(out).toMatchObject({ done: true, page: { received: 0 }, totals: { inserted: 60_000 } });
    expect(f.sim.stats().requests).toBe(before);
  });
});

// Event ids are unique across the data set (the table's primary key), so each test gets a
// database of its own rather than a source of its own.
describe('crashes at every seam resume with exact counts', () => {
  let f: PipelineFixture;
  beforeEach(async () => {
    f = await createPipelineFixture({ events: 15_000 });
  });
  afterEach(() => f?.close());

  it('a crash after the fetch and before the commit refetches the same page', async () => {
    const real = createStore(f.sql);
    let crashes = 0;
    const crashing: StepStore = {
      ...real,
      persistPage: async (args) => {
        if (crashes === 0 && args.pageCursor !== null) {
          crashes++;
          throw new Error('simulated crash before commit');
        }
        return real.persistPage(args);
      },
    };
    const state = { sourceId: 'before-commit' };
    const first = await stepPage(f.deps({ store: crashing }), { executionId: 'e1', state });
    expect(first.page.inserted).toBe(5000);
    await expect(stepPage(f.deps({ store: crashing }), { executionId: 'e1', state: first })).rejects.toThrow(
      'simulated crash before commit',
    );
    const mid = await counts(f, 'before-commit');
    expect(mid.rows).toBe(5000);
    expect(mid.cp?.pages).toBe(1);
    await f.runToDone('e1', { sourceId: 'before-commit', deps: f.deps({ store: crashing }) });
    const end = await counts(f, 'before-commit');
    expect(end).toMatchObject({ rows: 15_000, distinct: 15_000 });
    expect(end.cp).toMatchObject({
      status: 'complete',
      eventsInserted: 15_000,
      pages: 3,
      duplicatesSkipped: 0,
    });
  });

  it('a crash after the commit and before the return goes on from the committed page', async () => {
    const real = createStore(f.sql);
    let crashed = false;
    const crashing: StepStore = {
      ...real,
      persistPage: async (args) => {
        const result = await real.persistPage(args);
        if (!crashed) {
          crashed = true;
          throw new Error('simulated crash after commit');
        }
        return result;
      },
    };
    await expect(
      stepPage(f.deps({ store: crashing }), { executionId: 'e2', state: { sourceId: 'after-commit' } }),
    ).rejects.toThrow('simulated crash after commit');
    // The state machine retries with the same state: the checkpoint already moved on.
    const outputs = await f.runToDone('e2', { sourceId: 'after-commit', deps: f.deps({ store: crashing }) });
    expect(outputs.reduce((n, o) => n + o.page.received, 0)).toBe(10_000);
    const end = await counts(f, 'after-commit');
    expect(end).toMatchObject({ rows: 15_000, distinct: 15_000 });
    expect(end.cp).toMatchObject({
      status: 'complete',
      eventsInserted: 15_000,
      pages: 3,
      duplicatesSkipped: 0,
    });
  });

  it('the same page committed twice is refused the second time and stores nothing twice', async () => {
    const real = createStore(f.sql);
    let captured: Parameters<StepStore['persistPage']>[0] | null = null;
    const capturing: StepStore = {
      ...real,
      persistPage: async (args) => {
        captured = args;
        return real.persistPage(args);
      },
    };
    await stepPage(f.deps({ store: capturing }), { executionId: 'e3', state: { sourceId: 'twice' } });
    expect(captured).not.toBeNull();
    await expect(real.persistPage(captured!)).rejects.toBeInstanceOf(CheckpointConflictError);
    const c = await counts(f, 'twice');
    expect(c.rows).toBe(5000);
    expect(c.cp).toMatchObject({ pages: 1, eventsInserted: 5000 });
  });
});

describe('concurrency and leases', () => {
  let f: PipelineFixture;
  beforeEach(async () => {
    f = await createPipelineFixture({ events: 20_000 });
  });
  afterEach(() => f?.close());

  // These drive a one-chain source's own pacing (the checkpoint's headers): a store without the
  // shared pacer. With one (every deployed and local run), the pacer's tests cover it
  // (test/shared/pacing/, test/shared/db/pacer.test.ts) and the spacing tests below.
  it('two invocations of one execution racing on a source: exactly one advances', async () => {
    const state = { sourceId: 'race' };
    const results = await Promise.allSettled([
      stepPage(f.deps({ store: createStore(f.sql) }), { executionId: 'same', state }),
      stepPage(f.deps({ store: createStore(f.sql) }), { executionId: 'same', state }),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(1);
    expect(failed[0]!.reason).toBeInstanceOf(CheckpointConflictError);
    const c = await counts(f, 'race');
    expect(c.rows).toBe(5000);
    expect(c.cp?.pages).toBe(1);
  });

  it("a different execution's live lease is refused with LeaseHeldError naming the holder", async () => {
    await stepPage(f.deps({ store: createStore(f.sql) }), {
      executionId: 'holder',
      state: { sourceId: 'leased' },
    });
    const err = await stepPage(f.deps({ store: createStore(f.sql) }), {
      executionId: 'intruder',
      state: { sourceId: 'leased' },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(LeaseHeldError);
    expect(err.message).toContain('holder');
    const c = await counts(f, 'leased');
    expect(c.cp?.pages).toBe(1);
    // the explicit handover from a finished parent is accepted
    const child = await stepPage(f.deps({ store: createStore(f.sql) }), {
      executionId: 'child',
      state: { sourceId: 'leased', parentExecutionId: 'holder' },
    });
    expect(child.page.inserted).toBe(5000);
  });
});

describe('rate limiting, cursors and auth', () => {
  it('a 429 does not advance, records the headers and asks the Wait state for the server’s delay', async () => {
    const f = await createPipelineFixture({ events: 20_000, rateLimit: 2, windowSeconds: 60 });
    try {
      const first = await stepPage(f.deps({ store: createStore(f.sql) }), {
        executionId: 'r',
        state: { sourceId: 'rl' },
      });
      expect(first.page.inserted).toBe(5000);
      // another client of the same key spends the window
      await fetch(`${f.sim.url}/events?limit=1`, { headers: { 'X-API-Key': f.sim.options.apiKey } });
      const before = await counts(f, 'rl');
      const second = await stepPage(f.deps({ store: createStore(f.sql), config: { maxInTaskSleepMs: 0 } }), {
        executionId: 'r',
        state: first,
      });
      expect(second).toMatchObject({ done: false, skipped: 'rate-limited', page: { received: 0 } });
      expect(second.waitSeconds).toBeGreaterThanOrEqual(50);
      const after = await counts(f, 'rl');
      expect(after.rows).toBe(before.rows);
      expect(after.cp?.cursor).toBe(before.cp?.cursor);
      expect(after.cp?.rateLimited).toBe(1);
      // The count of 429s in a row is kept with the source: a resumed run keeps backing off.
      expect(after.cp?.lastRateLimit).toMatchObject({ limit: 2, remaining: 0, rejectedInARow: 1 });
      expect(after.cp!.nextRequestAtMs!).toBeGreaterThan(Date.now() + 50_000);
    } finally {
      await f.close();
    }
  });

  it('adds the configured safety margin to a spent window’s Reset, and 250 ms by default', async () => {
    const f = await createPipelineFixture({ events: 20_000, rateLimit: 1, windowSeconds: 60 });
    try {
      const t0 = Date.now();
      await stepPage(f.deps({ store: createStore(f.sql), config: { safetyMarginMs: 30_000 } }), {
        executionId: 'm',
        state: { sourceId: 'm1' },
      });
      const t1 = Date.now();
      const withMargin = (await counts(f, 'm1')).cp!.nextRequestAtMs!;
      // One request per 60 s window: the window is spent, Reset is about 60 s from the response.
      expect(withMargin).toBeGreaterThanOrEqual(t0 + 59_000 + 30_000);
      expect(withMargin).toBeLessThanOrEqual(t1 + 61_000 + 30_000);

      const f2 = await createPipelineFixture({ events: 20_000, rateLimit: 1, windowSeconds: 60 });
      try {
        const t2 = Date.now();
        await stepPage(f2.deps({ store: createStore(f2.sql) }), {
          executionId: 'm',
          state: { sourceId: 'm2' },
        });
        const t3 = Date.now();
        const byDefault = (await counts(f2, 'm2')).cp!.nextRequestAtMs!;
        expect(byDefault).toBeGreaterThanOrEqual(t2 + 59_000 + 250);
        expect(byDefault).toBeLessThanOrEqual(t3 + 61_000 + 250);
      } finally {
        await f2.close();
      }
    } finally {
      await f.close();
    }
  });

  it('a cursor that expired during a long pause is refreshed and accepted', async () => {
    const f = await createPipelineFixture({ events: 15_000, cursorTtlSeconds: 1 });
    try {
      const deps = f.deps({ store: createStore(f.sql), config: { cursorRefreshMarginMs: 0 } });
      const first = await stepPage(deps, { executionId: 'c', state: { sourceId: 'ttl' } });
      await new Promise((r) => setTimeout(r, 1_300));
      const second = await stepPage(deps, { executionId: 'c', state: first });
      expect(second.page.inserted).toBe(5000);
      // The step saw the stored cursor had expired and refreshed it before asking: no 400 at all.
      expect(f.sim.stats().byStatus['400']).toBeUndefined();
      expect(
        f.logs.some((l) => l.message === 'cursor expired or about to: refreshed before the request'),
      ).toBe(true);
    } finally {
      await f.close();
    }
  });

  it('a cursor that expires while the step sleeps out the spacing is refreshed after the sleep, before the request', async () => {
    const f = await createPipelineFixture({ events: 15_000, cursorTtlSeconds: 1 });
    try {
      // The second request is due 1.5 s after the first, slept in the task; the cursor lives 1 s.
      const deps = f.deps({
        store: createStore(f.sql),
        config: { cursorRefreshMarginMs: 200, minSpacingMs: 1_500, maxInTaskSleepMs: 3_000 },
      });
      const first = await stepPage(deps, { executionId: 'c2', state: { sourceId: 'sleep' } });
      const second = await stepPage(deps, { executionId: 'c2', state: first });
      expect(second.page.inserted).toBe(5000);
      expect(f.sim.stats().byStatus['400']).toBeUndefined();
      expect(
        f.logs.some((l) => l.message === 'cursor expired or about to: refreshed before the request'),
      ).toBe(true);
    } finally {
      await f.close();
    }
  });

  it('a refused refreshed cursor falls back to the rebuilt one, then fails clearly without losing anything', async () => {
    const f = await createPipelineFixture({
      events: 15_000,
      cursorTtlSeconds: 1,
      rejectRefreshedCursors: true,
    });
    try {
      const deps = f.deps({ store: createStore(f.sql), config: { cursorRefreshMarginMs: 0 } });
      const first = await stepPage(deps, { executionId: 'x', state: { sourceId: 'stuck' } });
      const before = await counts(f, 'stuck');
      await new Promise((r) => setTimeout(r, 1_300));
      const err = await stepPage(deps, { executionId: 'x', state: first }).catch((e) => e);
      expect(err).toBeInstanceOf(CursorRejectedError);
      expect(err.message).toContain('"stuck"');
      expect(err.message).toContain(`id=${before.cp?.positionId}`);
      // refreshed before the request (it had expired), refused; rebuilt from the position, refused
      expect(
        f.logs.filter((l) => l.message.startsWith('cursor refused')).map((l) => l.fields?.stage),
      ).toEqual(['rebuilt']);
      expect(f.sim.stats().faults.refreshedCursorRejected).toBe(2);
      const after = await counts(f, 'stuck');
      expect(after.rows).toBe(5000);
      expect(after.cp?.cursor).toBe(before.cp?.cursor);
      expect(after.cp?.pages).toBe(before.cp?.pages);
      expect(after.cp?.lastError).toContain('CursorRejectedError');
      expect(after.cp?.leaseOwner ?? null).toBeNull();
    } finally {
      await f.close();
    }
  });

  it('a wrong API key fails with AuthError on the first call, with no retry and no progress recorded', async () => {
    const f = await createPipelineFixture({ events: 10_000 });
    try {
      const err = await stepPage(f.deps({ apiKey: 'wrong-key' }), {
        executionId: 'a',
        state: { sourceId: 'auth' },
      }).catch((e) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect(f.sim.stats().requests).toBe(1);
      const c = await counts(f, 'auth');
      expect(c.rows).toBe(0);
      expect(c.cp).toMatchObject({ pages: 0, eventsInserted: 0, cursor: null, requests: 0 });
    } finally {
      await f.close();
    }
  });
});

describe('the chaos profile', () => {
  it('completes with every valid event once and every malformed one in rejected_events with its reason', async () => {
    const f = await createPipelineFixture({ events: 40_000, chaos: true, seed: 7, duplicateRowRate: 0.5 });
    try {
      const deps = f.deps({ config: { retryBudgetMs: 30_000 } });
      await f.runToDone('chaos', { sourceId: 'chaos', deps, maxSteps: 200 });
      const ds = f.sim.dataset;
      const c = await counts(f, 'chaos');
      expect(c.rows).toBe(ds.expectedValidCount());
      expect(c.distinct).toBe(c.rows);
      const rejected = ds.rejectedIndices();
      expect(rejected.length).toBeGreaterThan(0);
      expect(c.rejects).toBe(rejected.length);
      const rows = await f.sql<{ event_id: string | null; reason: string }[]>`
        select event_id, reason from rejected_events where source_id = 'chaos'`;
      const rejectedIds = new Set(rows.map((r) => r.event_id));
      for (const i of rejected) expect(rejectedIds.has(ds.idAt(i))).toBe(true);
      for (const r of rows) expect(r.reason).toMatch(/^(timestamp|sessionId|userId|type|name)/);
      const stored = await storedInstants(f.sql, 'chaos');
      for (let i = 0; i < ds.total; i++) {
        if (ds.isValid(i)) expect(stored.get(ds.idAt(i))).toBe(ds.timestampAt(i));
      }
      expect(c.cp).toMatchObject({ status: 'complete', eventsInserted: c.rows, rejected: c.rejects });
      expect(c.cp!.duplicatesSkipped).toBeGreaterThan(0); // pages that repeat rows from before their cursor
      expect(f.sim.stats().faults.transientError + f.sim.stats().faults.truncatedBody).toBeGreaterThan(0);
    } finally {
      await f.close();
    }
  });
});

/**
 * An HTTP proxy in front of the simulator that notes when each request arrived and what it was
 * answered. The requests it picks are still sent on (so they count against the simulator's
 * window, as a real server's 5xx do) but answered 503 without rate-limit headers, like a load
 * balancer; a 429 from the simulator is passed through so that it shows.
 */
async function startFaultyProxy(target: string, answer503: (n: number) => boolean) {
  const upstream = new URL(target);
  const seen: { atMs: number; status: number }[] = [];
  let n = 0;
  const server = createServer((req, res) => {
    const atMs = performance.timeOrigin + performance.now();
    const fail = answer503(++n);
    const forward = httpRequest(
      {
        host: upstream.hostname,
        port: upstream.port,
        path: req.url,
        method: req.method,
        headers: req.headers,
      },
      (answer) => {
        if (fail && answer.statusCode !== 429) {
          answer.resume();
          seen.push({ atMs, status: 503 });
          res.writeHead(503, { 'Content-Type': 'text/html', Server: 'awselb/2.0' });
          res.end('<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>');
          return;
        }
        seen.push({ atMs, status: answer.statusCode ?? 0 });
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on('error', (error) => res.destroy(error));
    req.pipe(forward);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${upstream.pathname}`,
    seen: () => [...seen].sort((a, b) => a.atMs - b.atMs),
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

/**
 * Drives the step as the state machine does: the Wait state sleeps the whole seconds asked for,
 * and a transient error is retried at once (the Retry's full jitter can draw a zero delay).
 */
async function driveLikeTheStateMachine(deps: StepDeps, executionId: string, sourceId: string) {
  let state: Record<string, unknown> = { sourceId };
  let transientRetries = 0;
  for (let i = 0; i < 500; i++) {
    let out: StepOutput;
    try {
      out = await stepPage(deps, { executionId, state });
    } catch (error) {
      if (error instanceof DataSyncError && error.transient) {
        transientRetries++;
        continue;
      }
      throw error;
    }
    if (out.done) return { transientRetries };
    state = out;
    if (out.waitSeconds > 0) await new Promise((r) => setTimeout(r, out.waitSeconds * 1000));
  }
  throw new Error('not done after 500 invocations');
}

describe('pacing holds through faults', () => {
  it('keeps the minimum spacing between any two requests, retries and cursor recovery included, and never draws a 429 from 5xx answers', async () => {
    // 200 ms keeps the suite quick; PACING_TEST_SPACING_MS=2200 runs the same scenario at the real spacing.
    const spacingMs = Number(process.env.PACING_TEST_SPACING_MS ?? 200);
    // Three requests per 2 s window at 200 ms spacing: the window, not the spacing, is the binding
    // limit, so 5xx answers that count against it matter.
    const f = await createPipelineFixture({
      events: 12_000,
      rateLimit: 3,
      windowSeconds: 2,
    });
    // 3 requests in every 10, two of them back to back: 30 % answered 503.
    const proxy = await startFaultyProxy(f.sim.url, (n) => [2, 3, 7].includes(n % 10));
    try {
      const client = createDataSyncClient({
        baseUrl: proxy.url,
        apiKey: f.sim.options.apiKey,
        timeoutMs: 10_000,
      });
      const starts: number[] = [];
      const deps: StepDeps = {
        ...f.deps({ config: { pageSize: 1000, minSpacingMs: spacingMs, retryBudgetMs: 10_000 } }),
        upstream: {
          fetchEvents: (params) => {
            starts.push(Date.now());
            return client.fetchEvents(params);
          },
        },
      };
      await driveLikeTheStateMachine(deps, 'paced', 'paced');

      const seen = proxy.seen();
      const gaps = seen.slice(1).map((r, i) => r.atMs - seen[i]!.atMs);
      const minGap = Math.min(...gaps);
      const startGaps = starts.slice(1).map((t, i) => t - starts[i]!);
      const answered503 = seen.filter((r) => r.status === 503).length;
      console.log(
        `[pacing] ${seen.length} requests, ${answered503} answered 503, ${seen.filter((r) => r.status === 429).length} x 429, min gap at the server ${minGap.toFixed(1)} ms, between starts ${Math.min(...startGaps)} ms, for a spacing of ${spacingMs} ms`,
      );
      expect(answered503).toBeGreaterThanOrEqual(Math.floor(seen.length * 0.3) - 1);
      // Where the step sends: the starts it hands to the client keep the spacing to the clock's
      // millisecond. Where the server receives: the proxy shares this process's event loop, so a
      // request can reach it some ms after it was started (a page being written, a GC pause);
      // the tolerance covers that hop, not the pacing.
      expect(Math.min(...startGaps)).toBeGreaterThanOrEqual(spacingMs - 1);
      expect(starts).toHaveLength(seen.length);
      expect(minGap).toBeGreaterThanOrEqual(spacingMs - 25);
      expect(seen.filter((r) => r.status === 429)).toHaveLength(0);
      expect(f.sim.stats().rateLimited).toBe(0);

      const c = await counts(f, 'paced');
      expect(c).toMatchObject({ rows: 12_000, distinct: 12_000, rejects: 0 });
      expect(c.cp).toMatchObject({
        status: 'complete',
        eventsInserted: 12_000,
        pages: 12,
        duplicatesSkipped: 0,
      });
    } finally {
      await proxy.close();
      await f.close();
    }
  });
});

describe('cursor recovery is paced like any request', () => {
  it('re-requests with a refreshed and then a rebuilt cursor no sooner than the spacing', async () => {
    const f = await createPipelineFixture({
      events: 15_000,
      cursorTtlSeconds: 1,
      rejectRefreshedCursors: true,
    });
    try {
      const spacingMs = 300;
      const client = createDataSyncClient({
        baseUrl: f.sim.url,
        apiKey: f.sim.options.apiKey,
        timeoutMs: 10_000,
      });
      const starts: number[] = [];
      const deps: StepDeps = {
        ...f.deps({ config: { cursorRefreshMarginMs: 0, minSpacingMs: spacingMs } }),
        upstream: {
          fetchEvents: (params) => {
            starts.push(Date.now());
            return client.fetchEvents(params);
          },
        },
      };
      const first = await stepPage(deps, { executionId: 'p', state: { sourceId: 'recover' } });
      await new Promise((r) => setTimeout(r, 1_300));
      starts.length = 0;
      const err = await stepPage(deps, { executionId: 'p', state: first }).catch((e) => e);
      expect(err).toBeInstanceOf(CursorRejectedError);
      // the refreshed cursor (refused), then the rebuilt one (refused)
      expect(starts).toHaveLength(2);
      expect(starts[1]! - starts[0]!).toBeGreaterThanOrEqual(spacingMs);
    } finally {
      await f.close();
    }
  });
});

describe('the invocation deadline', () => {
  it('bounds the request by the time left minus the write headroom, and starts no retry it cannot finish', async () => {
    const f = await createPipelineFixture({ events: 10_000, latencyMs: 4_000 });
    try {
      const deps = f.deps({ config: { writeHeadroomMs: 1_000, minAttemptMs: 500, retryBudgetMs: 30_000 } });
      const err = await stepPage(
        deps,
        { executionId: 'd', state: { sourceId: 'deadline' } },
        {
          deadlineMs: Date.now() + 2_500,
        },
      ).catch((e) => e);
      // The client's own timeout is 10 s; the deadline cut the request at about 1.5 s.
      expect(err).toBeInstanceOf(UpstreamUnavailableError);
      expect(err.transient).toBe(true);
      const [, bound] = /did not answer within (\d+) ms/.exec(err.message) ?? [];
      expect(Number(bound)).toBeGreaterThan(0);
      expect(Number(bound)).toBeLessThanOrEqual(1_500);
      // The time left after the timeout was below MIN_ATTEMPT_MS: no second request.
      expect(f.sim.stats().requests).toBe(1);
      const c = await counts(f, 'deadline');
      expect(c.rows).toBe(0);
      expect(c.cp).toMatchObject({ pages: 0, cursor: null });
    } finally {
      await f.close();
    }
  });

  it('with too little time left, throws the transient InvocationDeadlineError instead of starting a request', async () => {
    const f = await createPipelineFixture({ events: 10_000 });
    try {
      const deps = f.deps({ config: { writeHeadroomMs: 2_000, minAttemptMs: 1_000 } });
      const err = await stepPage(
        deps,
        { executionId: 'd', state: { sourceId: 'late' } },
        {
          deadlineMs: Date.now() + 2_500,
        },
      ).catch((e) => e);
      expect(err).toBeInstanceOf(InvocationDeadlineError);
      expect(err.transient).toBe(true);
      expect(err.message).toMatch(/WRITE_HEADROOM_MS=2000.*MIN_ATTEMPT_MS=1000/s);
      expect(f.sim.stats().requests).toBe(0);
      // Transient: the source is not marked failed, and the same execution may go on.
      const c = await counts(f, 'late');
      expect(c.cp).toMatchObject({ status: 'running', lastError: null, pages: 0 });
      const next = await stepPage(deps, { executionId: 'd', state: { sourceId: 'late' } });
      expect(next.page.inserted).toBe(5000);
    } finally {
      await f.close();
    }
  });
});

describe('every request sent is counted', () => {
  it('counts the requests of an invocation that ends not yet due after a failed answer', async () => {
    const f = await createPipelineFixture({ events: 10_000 });
    try {
      const real = createStore(f.sql, { pacerKey: f.sim.url });
      let sent = 0;
      const store: StepStore = {
        ...real,
        pacer: {
          ...real.pacer!,
          // Slots are granted until a request went out; the one after its failed answer is not due in this invocation.
          reserve: async (args) =>
            sent === 0
              ? real.pacer!.reserve(args)
              : { startAtMs: args.nowMs + 60_000, reserved: false, reason: 'test: the window is spent' },
        },
      };
      const base = f.deps({ store });
      const deps: StepDeps = {
        ...base,
        upstream: {
          fetchEvents: async (params) => {
            sent++;
            if (sent === 1) throw new UpstreamUnavailableError('HTTP 503 from the test', 503);
            return base.upstream.fetchEvents(params);
          },
        },
      };
      const out = await stepPage(deps, { executionId: 'nd', state: { sourceId: 'not-due' } });
      expect(out).toMatchObject({ done: false, skipped: 'not-yet-due', page: { received: 0 } });
      expect(sent).toBe(1);
      const c = await counts(f, 'not-due');
      expect(c.rows).toBe(0);
      expect(c.cp?.requests).toBe(1);
      expect(c.cp?.rateLimited).toBe(0);
    } finally {
      await f.close();
    }
  });
});

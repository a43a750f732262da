import {
  RateLimiter,
  type ResetBasis,
  type ResetRounding,
  resetSecondsOf,
} from '#local/simulator/rate-limiter.ts';
import { configDefaults } from '#shared/config.ts';
import { cursorFromPosition } from '#shared/cursor.ts';
import {
  CursorExpiredError,
  RateLimitedError,
  type RateLimitInfo,
  UpstreamUnavailableError,
} from '#shared/errors.ts';
import { planNextRequest, waitSecondsFor } from '#shared/pacing/headers.ts';
import { RequestPacer } from '#shared/pacing/request-pacer.ts';
import {
  applyAnswer,
  decideReservation,
  emptyPacerState,
  type PacerState,
  releaseReservation,
  windowEstimateMs,
} from '#shared/pacing/shared-pacer.ts';
import type {
  Checkpoint,
  SharedPacerPort,
  StepConfig,
  StepDeps,
  UpstreamClient,
} from '#shared/step/contract.ts';
import { fetchWithRecovery } from '#shared/step/recovery.ts';
import type { FetchPageResult } from '#shared/upstream/types.ts';
import { seededRandom } from './random.ts';

/*
 * The step's request layer (shared/step/recovery.ts: pages, retries after 5xx and timeouts,
 * cursor refresh and rebuild, built cursors; the plan's request is the same call) driven by N
 * chains in VIRTUAL time against a member of the upstream family (the simulator's own
 * RateLimiter), with the state machine's waits (whole seconds) and retries around it, and the
 * shared pacer's row held in memory. A virtual clock makes a run of hundreds of requests take
 * milliseconds and every instant exact, so a property test can assert on every start.
 *
 * Faults: 5xx (counted or not by the server), timeouts (the server counted the request, its
 * answer never comes), cursors refused as expired, slow pacer calls (a lock or connection that
 * takes its time) and timers that fire late (a busy event loop).
 */

export interface FamilyCase {
  chains: number;
  requests: number;
  limit: number;
  windowMs: number;
  mode: 'fixed' | 'sliding';
  resetBasis: ResetBasis;
  rounding: ResetRounding;
  align: 'first-request' | 'clock';
  countRejected: boolean;
  uncountedErrors: boolean;
  /** When the server computes the headers it reports: at the arrival or at the answer. */
  headerAt: 'arrival' | 'answer';
  /** Latency of a page: 0, or 3.5-4 s with `tailRate` of them at 8 s. */
  live: boolean;
  tailRate: number;
  /** Share of requests answered 5xx (the load balancer's; no headers reach the pacer). */
  errorRate: number;
  /** Share of requests that never answer (the client times out). */
  timeoutRate: number;
  /** Share of requests with a cursor refused as expired (the step refreshes, then rebuilds). */
  cursorRefusalRate: number;
  /** Share of pacer calls and timers that come back late, and by up to how much. */
  lateRate: number;
  lateMaxMs: number;
  seed: number;
  /** One chain through the shared pacer too (the step gives a one-chain source the checkpoint's own pacing). */
  sharedForOne?: boolean;
  minSpacingMs?: number;
  safetyMarginMs?: number;
}

/** A quiet case: 3 chains, 10 per 20 s fixed from the first request, Reset to its end rounded up, no faults. */
export const QUIET_FAMILY_CASE: FamilyCase = {
  chains: 3,
  requests: 45,
  limit: 10,
  windowMs: 20_000,
  mode: 'fixed',
  resetBasis: 'window-start',
  rounding: 'up',
  align: 'first-request',
  countRejected: false,
  uncountedErrors: false,
  headerAt: 'arrival',
  live: false,
  tailRate: 0,
  errorRate: 0,
  timeoutRate: 0,
  cursorRefusalRate: 0,
  lateRate: 0,
  lateMaxMs: 0,
  seed: 1,
  minSpacingMs: 2200,
};

export interface FamilyRequest {
  chain: number;
  atMs: number;
  status: number | 'timeout';
}

export interface FamilyRun {
  requests: FamilyRequest[];
  rateLimited: number;
  pages: number;
  /** First request to the last page's answer, virtual ms. */
  elapsedMs: number;
  windowEstimateMs: number | null;
  stalled: boolean;
  /** The shared pacer's row at the end (what it learned). */
  pacer: PacerState;
}

/** A discrete-event clock: `sleep` resolves when the run reaches its instant. */
class VirtualTime {
  now: number;
  private seq = 0;
  private readonly timers: { at: number; seq: number; resolve: () => void }[] = [];
  constructor(start: number) {
    this.now = start;
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.timers.push({ at: this.now + Math.max(0, ms), seq: this.seq++, resolve });
    });
  }
  /** Runs until `done()` or nothing is left to wake; false when it stopped with work pending. */
  async run(done: () => boolean, maxMs: number): Promise<boolean> {
    const until = this.now + maxMs;
    for (;;) {
      await new Promise((r) => setImmediate(r));
      if (done()) return true;
      if (this.timers.length === 0) return false;
      this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.timers.shift()!;
      if (next.at > until) return false;
      this.now = Math.max(this.now, next.at);
      next.resolve();
    }
  }
}

const T0 = 1_767_225_600_000; // 2026-01-01, on a whole minute: clock-aligned windows start there

export async function runFamilyCase(c: FamilyCase): Promise<FamilyRun> {
  const random = seededRandom(c.seed);
  const vt = new VirtualTime(T0 + Math.floor(random() * c.windowMs));
  const late = (ms: number) => (random() < c.lateRate ? ms + random() * c.lateMaxMs : ms);
  const clock = { now: () => vt.now, sleep: (ms: number) => vt.sleep(late(ms)) };
  const limiter = new RateLimiter({
    limit: c.limit,
    windowMs: c.windowMs,
    mode: c.mode,
    countRejected: c.countRejected,
    resetBasis: c.resetBasis,
    windowAlign: c.align,
  });
  const config: StepConfig = {
    ...configDefaults,
    minSpacingMs: c.minSpacingMs ?? configDefaults.minSpacingMs,
    safetyMarginMs: c.safetyMarginMs ?? configDefaults.safetyMarginMs,
    // Whole seconds, in either direction, unless the member's Reset is exact.
    resetGranularityMs: 1000,
    random,
  };
  const requests: FamilyRequest[] = [];
  let pages = 0;
  let lastAnswer = vt.now;

  const rateInfo = (d: { limit: number; remaining: number; resetMs: number }, lat: number): RateLimitInfo => {
    const reset = Math.max(0, d.resetMs - (c.headerAt === 'answer' ? lat : 0));
    return { limit: d.limit, remaining: d.remaining, resetSeconds: resetSecondsOf(reset, c.rounding, 1) };
  };
  const latencyOf = () => (!c.live ? 0 : random() < c.tailRate ? 8000 : 3500 + 500 * random());

  function upstreamFor(chain: number): UpstreamClient {
    return {
      async fetchEvents({ cursor, timeoutMs }) {
        const at = vt.now;
        const startedAtMs = at;
        const fault = random();
        const timeout = Math.min(timeoutMs ?? config.requestTimeoutMs, config.requestTimeoutMs);
        const isError = fault < c.errorRate;
        const isTimeout = !isError && fault < c.errorRate + c.timeoutRate;
        const cursorRefused = cursor !== null && cursor !== undefined && random() < c.cursorRefusalRate;
        const counted = !(c.uncountedErrors && (isError || cursorRefused));
        const d = counted ? limiter.hit('k', at) : limiter.peek('k', at);
        const record: FamilyRequest = { chain, atMs: at, status: 200 };
        requests.push(record);
        if (!d.allowed) {
          record.status = 429;
          const info = rateInfo(d, 0);
          throw new RateLimitedError('429 (virtual)', info.resetSeconds, { ...info, remaining: 0 });
        }
        if (isTimeout) {
          record.status = 'timeout';
          await vt.sleep(timeout);
          throw new UpstreamUnavailableError(`did not answer within ${timeout} ms (virtual)`);
        }
        if (isError) {
          record.status = 503;
          throw new UpstreamUnavailableError('503 from the load balancer (virtual)', 503);
        }
        if (cursorRefused) {
          record.status = 400;
          throw new CursorExpiredError('cursor expired (virtual)');
        }
        const lat = latencyOf();
        if (lat > 0) await vt.sleep(lat);
        lastAnswer = vt.now;
        const result: FetchPageResult = {
          page: {
            data: [],
            hasMore: true,
            nextCursor: cursorFromPosition(
              { ts: T0 - pages * 1000, id: '00000000-0000-4000-8000-000000000001' },
              vt.now,
            ),
            limit: 5000,
            total: null,
            cursorExpiresIn: 116,
            requestId: null,
          },
          status: 200,
          rateLimit: rateInfo(d, lat),
          requestId: null,
          startedAtMs,
          latencyMs: vt.now - startedAtMs,
          bytes: 0,
        };
        return result;
      },
    };
  }

  // The shared pacer's row, in memory; each call takes the lock at a (sometimes late) instant.
  let state: PacerState = emptyPacerState();
  const shared: SharedPacerPort = {
    async reserve(args) {
      await clock.sleep(1);
      const d = decideReservation(state, args);
      state = d.state;
      await clock.sleep(1);
      return { startAtMs: d.startAtMs, reserved: d.reserved, reason: d.reason };
    },
    async answered(args) {
      await clock.sleep(1);
      state = applyAnswer(state, args);
    },
    async release(args) {
      await clock.sleep(1);
      state = releaseReservation(state, args.startAtMs);
    },
  };

  const noop = () => undefined;
  const target = c.requests;
  let stop = false;

  async function chainLoop(chain: number): Promise<void> {
    const deps = {
      upstream: upstreamFor(chain),
      clock,
      logger: { info: noop, warn: noop, error: noop },
      metrics: { add: noop },
      config,
      store: {},
    } as unknown as StepDeps;
    let cp = {
      sourceId: `virtual~${chain}`,
      cursor: cursorFromPosition(
        { ts: T0 - chain * 3_600_000, id: '00000000-0000-4000-8000-000000000000' },
        vt.now,
      ),
      positionTs: T0 - chain * 3_600_000,
      positionId: '00000000-0000-4000-8000-000000000000',
      nextRequestAtMs: null as number | null,
      lastRateLimit: null as RateLimitInfo | null,
    } as Checkpoint;
    const useShared = c.chains > 1 || c.sharedForOne === true;
    // The Wait state: whole seconds, at least one when the page was not due.
    const waitState = async (notBeforeMs: number, atLeastOne: boolean) => {
      const { waitSeconds } = waitSecondsFor(notBeforeMs, vt.now);
      const s = atLeastOne ? Math.max(1, waitSeconds) : waitSeconds;
      if (s > 0) await clock.sleep(s * 1000);
    };
    while (!stop) {
      const due = cp.nextRequestAtMs ?? 0;
      if (due - vt.now > config.maxInTaskSleepMs) {
        await waitState(due, true);
        continue;
      }
      const pacer = new RequestPacer(useShared ? { ...cp, lastRateLimit: null } : cp, config);
      try {
        const fetched = await fetchWithRecovery(
          deps,
          config,
          cp,
          pacer,
          vt.now + 60_000,
          useShared ? { shared } : {},
        );
        if (fetched.kind === 'page') {
          pages++;
          if (pages >= target) stop = true;
          const r = fetched.result;
          const plan = planNextRequest({
            lastRequestStartMs: r.startedAtMs,
            responseAtMs: r.startedAtMs + r.latencyMs,
            minSpacingMs: config.minSpacingMs,
            rateLimit: useShared ? null : r.rateLimit,
            safetyMarginMs: config.safetyMarginMs,
            resetGranularityMs: config.resetGranularityMs,
          });
          cp = {
            ...cp,
            cursor: r.page.nextCursor,
            nextRequestAtMs: plan.notBeforeMs,
            lastRateLimit: r.rateLimit,
          };
          await waitState(plan.notBeforeMs, false);
        } else if (fetched.kind === 'not-due') {
          await waitState(fetched.notBeforeMs, true);
        } else if (fetched.kind === 'rate-limited' || fetched.kind === 'window-spent') {
          cp = { ...cp, nextRequestAtMs: fetched.notBeforeMs, lastRateLimit: fetched.rateLimit };
          await waitState(fetched.notBeforeMs, false);
        } else {
          return;
        }
      } catch {
        // The invocation failed (its retry budget spent): page.ts cools down for the spacing,
        // then the state machine retries after a jittered 1-3 s.
        if (pacer.lastStartMs !== null) {
          const wait = pacer.lastStartMs + config.minSpacingMs - vt.now;
          if (wait > 0) await clock.sleep(wait);
        }
        await clock.sleep(1000 + 2000 * random());
      }
    }
  }

  const loops = Array.from({ length: c.chains }, (_, i) => chainLoop(i));
  let finished = 0;
  for (const l of loops) void l.then(() => finished++);
  const ok = await vt.run(() => finished === c.chains, 3_600_000 * 4);
  stop = true;
  const first = requests[0]?.atMs ?? vt.now;
  return {
    requests,
    rateLimited: requests.filter((r) => r.status === 429).length,
    pages,
    elapsedMs: lastAnswer - first,
    windowEstimateMs: windowEstimateMs(state),
    stalled: !ok,
    pacer: state,
  };
}

/** The smallest gap between two request starts (any chains), virtual ms. */
export function smallestGapMs(requests: FamilyRequest[]): number {
  const starts = requests.map((r) => r.atMs).sort((a, b) => a - b);
  let gap = Number.POSITIVE_INFINITY;
  for (let i = 1; i < starts.length; i++) gap = Math.min(gap, starts[i]! - starts[i - 1]!);
  return gap;
}

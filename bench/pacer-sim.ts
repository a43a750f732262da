import { RateLimiter } from '#local/simulator/rate-limiter.ts';
import type { Db } from '#shared/db/client.ts';
import { recordPacerAnswer, releasePacerSlot, reservePacerSlot } from '#shared/db/pacer.ts';
import {
  applyAnswer,
  decideReservation,
  emptyPacerState,
  type PacerReason,
  type PacerState,
} from '#shared/pacing/shared-pacer.ts';
import { parseRateLimit } from '#shared/upstream/client.ts';

/*
 * A discrete-event simulation of N chains sharing the pure pacer against the simulator's own
 * rate limiter, in virtual time: no clock, no I/O, thousands of requests in milliseconds.
 * The server decides at the request's arrival (as the simulator does); `headerAt` says when it
 * computes the headers it reports: at the arrival (the simulator) or at the answer (Reset then
 * counts from the answer: the other reading, which the pacer must also survive).
 */

export interface SimConfig {
  chains: number;
  requests: number;
  windowMs: number;
  mode: 'fixed' | 'sliding';
  limit?: number;
  latencyMs: number | ((n: number) => number);
  /** Network delay from the send to the server's arrival. */
  netMs?: number;
  headerAt: 'arrival' | 'answer';
  minSpacingMs?: number;
  safetyMarginMs?: number;
  maxAheadMs?: number;
  countRejected?: boolean;
  /** Request numbers (1-based) answered 503 without headers (counted by the server). */
  faults?: Set<number>;
  /** Whole-second headers (the live service) instead of exact ones. */
  wholeSeconds?: boolean;
  startMs?: number;
}

export interface SimRequest {
  n: number;
  chain: number;
  startMs: number;
  answerMs: number;
  status: number;
  reason: PacerReason;
}

export interface SimResult {
  requests: SimRequest[];
  rateLimited: number;
  elapsedMs: number;
  state: PacerState;
}

export function simulate(cfg: SimConfig): SimResult {
  const limit = cfg.limit ?? 10;
  const spacing = cfg.minSpacingMs ?? 2200;
  const margin = cfg.safetyMarginMs ?? 250;
  const maxAhead = cfg.maxAheadMs ?? 60_000;
  const net = cfg.netMs ?? 0;
  const t0 = cfg.startMs ?? 1_000_000;
  const limiter = new RateLimiter({
    limit,
    windowMs: cfg.windowMs,
    mode: cfg.mode,
    countRejected: cfg.countRejected ?? false,
  });
  let state = emptyPacerState();
  const requests: SimRequest[] = [];
  // Each chain's next wake-up; a chain is either waiting to reserve or waiting for its answer.
  const wake = Array.from({ length: cfg.chains }, (_, i) => t0 + i);
  let sent = 0;
  let guard = 0;
  while (sent < cfg.requests) {
    if (++guard > cfg.requests * 200) throw new Error('simulation does not progress');
    let c = 0;
    for (let i = 1; i < wake.length; i++) if (wake[i]! < wake[c]!) c = i;
    const now = wake[c]!;
    const d = decideReservation(state, {
      nowMs: now,
      minSpacingMs: spacing,
      maxAheadMs: maxAhead,
      safetyMarginMs: margin,
    });
    state = d.state;
    if (!d.reserved) {
      wake[c] = Math.max(d.startAtMs, now + 1);
      continue;
    }
    const n = ++sent;
    const start = Math.max(now, d.startAtMs);
    const arrival = start + net;
    const latency = typeof cfg.latencyMs === 'function' ? cfg.latencyMs(n) : cfg.latencyMs;
    const rate = limiter.hit('k', arrival);
    let status = rate.allowed ? 200 : 429;
    if (rate.allowed && cfg.faults?.has(n)) status = 503;
    const lat = status === 200 ? latency : 0;
    const answer = arrival + lat + net;
    const computedAt = cfg.headerAt === 'arrival' ? arrival : arrival + lat;
    const resetMs = Math.max(0, rate.resetMs - (computedAt - arrival));
    const resetSeconds = cfg.wholeSeconds ? Math.ceil(resetMs / 1000) : resetMs / 1000;
    const rateLimit = status === 503 ? null : { limit: rate.limit, remaining: rate.remaining, resetSeconds };
    state = applyAnswer(state, {
      requestStartMs: start,
      reservedStartMs: d.startAtMs,
      answerAtMs: answer,
      rateLimit,
      retryAfterSeconds: status === 429 ? resetSeconds : null,
    });
    requests.push({ n, chain: c, startMs: start, answerMs: answer, status, reason: d.reason });
    wake[c] = answer;
  }
  const first = requests[0]!;
  const last = requests.reduce((a, b) => (b.answerMs > a.answerMs ? b : a));
  return {
    requests,
    rateLimited: requests.filter((r) => r.status === 429).length,
    elapsedMs: last.answerMs - first.startMs,
    state,
  };
}

/** The smallest gap between two consecutive starts (any chains). */
export function minGapMs(requests: SimRequest[]): number {
  const starts = requests.map((r) => r.startMs).sort((a, b) => a - b);
  let gap = Number.POSITIVE_INFINITY;
  for (let i = 1; i < starts.length; i++) gap = Math.min(gap, starts[i]! - starts[i - 1]!);
  return gap;
}

/** max(59 W + L, 599 x spacing + L) for `requests` requests of `limit` per window. */
export function boundMs(cfg: {
  requests: number;
  windowMs: number;
  latencyMs: number;
  limit?: number;
  minSpacingMs?: number;
}) {
  const limit = cfg.limit ?? 10;
  const spacing = cfg.minSpacingMs ?? 2200;
  return Math.max(
    (Math.ceil(cfg.requests / limit) - 1) * cfg.windowMs + cfg.latencyMs,
    (cfg.requests - 1) * spacing + cfg.latencyMs,
  );
}

export interface ChainRecord {
  chain: number;
  reservedAtMs: number;
  sentAtMs: number;
  answerAtMs: number;
  status: number;
  reason: PacerReason;
}

export interface ChainsRun {
  records: ChainRecord[];
  rateLimited: number;
  /** First send to last answer. */
  elapsedMs: number;
}

/**
 * N concurrent loops against a real simulator through the real pacer row: reserve, sleep until
 * the reserved start, GET a page, record the answer. Each request is a distinct URL so that the
 * simulator's cache never answers it without its latency.
 */
export async function runChains(opts: {
  db: Db;
  key: string;
  eventsUrl: string;
  apiKey: string;
  chains: number;
  requests: number;
  minSpacingMs: number;
  safetyMarginMs: number;
  maxAheadMs: number;
}): Promise<ChainsRun> {
  const records: ChainRecord[] = [];
  let claimed = 0;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
  async function loop(chain: number): Promise<void> {
    for (;;) {
      if (claimed >= opts.requests) return;
      const slot = await reservePacerSlot(opts.db, {
        key: opts.key,
        nowMs: Date.now(),
        minSpacingMs: opts.minSpacingMs,
        maxAheadMs: opts.maxAheadMs,
        safetyMarginMs: opts.safetyMarginMs,
      });
      if (!slot.reserved) {
        await sleep(slot.startAtMs - Date.now());
        continue;
      }
      if (claimed >= opts.requests) {
        await releasePacerSlot(opts.db, { key: opts.key, startAtMs: slot.startAtMs });
        return;
      }
      const n = ++claimed;
      // setTimeout may fire a millisecond early by Date.now(): never send before the reserved start.
      while (Date.now() < slot.startAtMs) await sleep(slot.startAtMs - Date.now());
      const sentAtMs = Date.now();
      const res = await fetch(`${opts.eventsUrl}&n=${n}`, { headers: { 'X-API-Key': opts.apiKey } });
      await res.arrayBuffer();
      const answerAtMs = Date.now();
      const retryAfter = res.headers.get('retry-after-exact') ?? res.headers.get('retry-after');
      await recordPacerAnswer(opts.db, {
        key: opts.key,
        requestStartMs: sentAtMs,
        reservedStartMs: slot.startAtMs,
        answerAtMs,
        rateLimit: parseRateLimit(res.headers),
        retryAfterSeconds: res.status === 429 && retryAfter !== null ? Number(retryAfter) : null,
      });
      records.push({
        chain,
        reservedAtMs: slot.startAtMs,
        sentAtMs,
        answerAtMs,
        status: res.status,
        reason: slot.reason,
      });
    }
  }
  // A warm connection, as a chain's long-lived client has: the simulator's stats route is not rate limited.
  await fetch(new URL('/__sim/stats', opts.eventsUrl)).then((r) => r.arrayBuffer());
  await Promise.all(Array.from({ length: opts.chains }, (_, c) => loop(c)));
  records.sort((a, b) => a.reservedAtMs - b.reservedAtMs);
  const first = Math.min(...records.map((r) => r.sentAtMs));
  const last = Math.max(...records.map((r) => r.answerAtMs));
  return { records, rateLimited: records.filter((r) => r.status === 429).length, elapsedMs: last - first };
}

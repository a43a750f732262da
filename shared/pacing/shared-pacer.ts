import { z } from 'zod';
import { ConfigError, type RateLimitInfo } from '../errors.ts';

/*
 * The shared request pacer's decisions. Pure: no clock, no I/O; shared/db/pacer.ts keeps the
 * state in one row per upstream key and calls these functions under the row's lock. Every
 * request of every chain reserves its start here: a sliding log over the reserved starts keeps
 * the spacing and at most `limit` starts per learned window; the newest headers are a safety
 * net; a probe learns how late the server computes its headers, so that a window need not pay
 * one latency. The model, and why each rule is safe: docs/architecture.md#pacing.
 *
 * All instants are epoch ms of ONE clock (the callers'), durations ms.
 */

export const PACER_STATE_VERSION = 1;
/** Starts kept in the state: at least this many, more when `limit` is larger. */
const MIN_STARTS_KEPT = 64;
/** Window observations kept; W_est is the largest (a decrease is believed after this many answers). */
const OBSERVATIONS_KEPT = 20;
/** Before headers: a start never answered counts as lost after this many spacings. */
const STALE_SPACINGS = 10;

export interface PacerStart {
  /** The reserved start. */
  at: number;
  /** When it was actually sent (from the answer), if later than `at` it counts from then. */
  sent?: number;
  /** 'h': answered with rate-limit headers (the server saw it); 'n': answered without (5xx, lost). */
  done?: 'h' | 'n';
  /** This reservation is the probe. */
  probe?: true;
}

export interface PacerObservation {
  /** When the answer came. */
  answerAt: number;
  /** (answer + Reset) - start(oldest): an upper bound of W, counted from the answer. */
  fromAnswer: number;
  /** (start + Reset) - start(oldest): the same counted from the request's start. */
  fromStart: number;
}

export interface PacerHeaders {
  /** The request's reserved start (identifies it in `starts`) and actual start. */
  at: number;
  startMs: number;
  answerMs: number;
  limit: number;
  remaining: number;
  resetMs: number;
}

export type ProbeState =
  /** Not started; arms at the next clean point while δ is unknown. */
  | { state: 'none' }
  /** The opener was reserved at `openerAt`; the window holds one slot back. */
  | { state: 'armed'; openerAt: number; openerSent?: number; openerResetMs?: number }
  /** The probe was reserved at `probeAt`. */
  | { state: 'pending'; openerAt: number; openerSent: number; openerResetMs: number; probeAt: number }
  /** Evidence against an early basis: answers count from the answer from now on. */
  | { state: 'failed'; reason: string };

export interface PacerState {
  v: typeof PACER_STATE_VERSION;
  /** Earliest next start by the spacing. */
  nextAtMs: number | null;
  /** Reserved starts, ascending. */
  starts: PacerStart[];
  limit: number | null;
  observations: PacerObservation[];
  /** The newest answer's headers (by start). */
  last: PacerHeaders | null;
  /** Until when a 429 asked us to wait (without margin). */
  blockedUntilMs: number | null;
  /** Learned upper bound of (header instant - request start); null = count from the answer. */
  headerDelayMs: number | null;
  probe: ProbeState;
}

export function emptyPacerState(): PacerState {
  return {
    v: PACER_STATE_VERSION,
    nextAtMs: null,
    starts: [],
    limit: null,
    observations: [],
    last: null,
    blockedUntilMs: null,
    headerDelayMs: null,
    probe: { state: 'none' },
  };
}

export type PacerReason =
  | 'free'
  | 'spacing'
  | 'window'
  | 'headers'
  | 'retry-after'
  | 'first-answer'
  | 'probe';

export interface ReserveInput {
  nowMs: number;
  minSpacingMs: number;
  /** A start further away than this is not reserved (the caller waits in the state machine). */
  maxAheadMs: number;
  /** Added to every header-derived instant; covers network jitter and late sends. */
  safetyMarginMs: number;
}

export interface ReserveDecision {
  state: PacerState;
  startAtMs: number;
  reserved: boolean;
  reason: PacerReason;
}

export interface AnswerInput {
  /** When the request was actually sent. */
  requestStartMs: number;
  /** The reservation it used, when the caller knows it; else the latest open one at or before the start. */
  reservedStartMs?: number | null;
  answerAtMs: number;
  rateLimit: RateLimitInfo | null;
  /** From a 429. */
  retryAfterSeconds?: number | null;
}

const finite = z.number().refine(Number.isFinite, { error: 'must be a finite number' });
const nonNegative = finite.refine((n) => n >= 0, { error: 'must be >= 0' });
const reserveInputSchema = z.object({
  nowMs: finite,
  minSpacingMs: nonNegative,
  maxAheadMs: nonNegative,
  safetyMarginMs: nonNegative,
});
const answerInputSchema = z.object({
  requestStartMs: finite,
  reservedStartMs: finite.nullish(),
  answerAtMs: finite,
  rateLimit: z.object({ limit: nonNegative, remaining: nonNegative, resetSeconds: nonNegative }).nullable(),
  retryAfterSeconds: nonNegative.nullish(),
});

function parse<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const parsed = schema.safeParse(input);
  if (!parsed.success)
    throw new ConfigError(
      `${what} got invalid input: pass epoch milliseconds and durations in ms.\n${z.prettifyError(parsed.error)}`,
    );
  return parsed.data;
}

/** When a start counts from: a late send occupies its slot from when it was sent. */
const effective = (s: PacerStart) => Math.max(s.at, s.sent ?? s.at);

/**
 * The window estimate (an upper bound of W) under the current header delay, or null before
 * any observation.
 */
export function windowEstimateMs(state: PacerState): number | null {
  if (state.observations.length === 0) return null;
  let w = Number.NEGATIVE_INFINITY;
  for (const o of state.observations) {
    const d = state.headerDelayMs;
    w = Math.max(w, d === null ? o.fromAnswer : Math.min(o.fromAnswer, o.fromStart + d));
  }
  return w;
}

/** When the slot the answer's Reset names frees (without margin). */
function slotFreesAt(state: PacerState, h: PacerHeaders): number {
  const delay = h.answerMs - h.startMs;
  const d = state.headerDelayMs === null ? delay : Math.min(delay, state.headerDelayMs);
  return h.startMs + d + h.resetMs;
}

/** Earliest start allowed by a sliding log of `limit` over `windowMs`, given the starts. */
function logBound(starts: PacerStart[], limit: number, windowMs: number): number {
  if (limit <= 0) return Number.POSITIVE_INFINITY;
  if (starts.length < limit) return Number.NEGATIVE_INFINITY;
  // The `limit`-th most recent start must have left the window (ties: the latest effective instant).
  const eff = starts.map(effective).sort((a, b) => a - b);
  return eff[eff.length - limit]! + windowMs;
}

/** Reserves the next start (or says when it would be). */
export function decideReservation(state: PacerState, input: ReserveInput): ReserveDecision {
  const {
    nowMs,
    minSpacingMs,
    maxAheadMs,
    safetyMarginMs: margin,
  } = parse(reserveInputSchema, input, 'reservePacerSlot');
  let t = nowMs;
  let reason: PacerReason = 'free';
  const raise = (bound: number, why: PacerReason) => {
    if (bound > t) {
      t = bound;
      reason = why;
    }
  };
  if (state.nextAtMs !== null) raise(state.nextAtMs, 'spacing');
  if (state.blockedUntilMs !== null) raise(state.blockedUntilMs + margin, 'retry-after');

  const windowMs = windowEstimateMs(state);
  const limit = state.limit;
  let probe = state.probe;
  let isProbe = false;

  if (windowMs === null || limit === null) {
    // Nothing learned yet: one request at a time until an answer brings headers. A start never
    // answered (its invocation died) stops counting after a while.
    const staleBefore = nowMs - STALE_SPACINGS * Math.max(minSpacingMs, 1000);
    const open = state.starts.some((s) => !s.done && s.at > staleBefore);
    if (open) {
      return {
        state,
        startAtMs: Math.ceil(Math.max(t, nowMs + Math.max(minSpacingMs, 1))),
        reserved: false,
        reason: 'first-answer',
      };
    }
  } else {
    const base = t;
    // A probe whose opener or probe never answered (the invocation died) is given up.
    if (
      (probe.state === 'armed' && probe.openerResetMs === undefined && nowMs > probe.openerAt + windowMs) ||
      (probe.state === 'pending' && nowMs > probe.probeAt + windowMs)
    )
      probe = { state: 'none' };
    // Probing even with little latency pays: slow answers (a loaded machine, a slow network)
    // inflate the estimate counted from the answer, and the learned delay caps them. A probe
    // that could not be earlier than the answer-based slot is dropped below.

    const held = probe.state === 'armed' || probe.state === 'pending' ? 1 : 0;
    raise(logBound(state.starts, limit - held, windowMs + margin), 'window');
    raise(headersBound(state, margin), 'headers');

    if (probe.state === 'armed' && probe.openerSent !== undefined && probe.openerResetMs !== undefined) {
      const { openerAt, openerSent, openerResetMs } = probe;
      const inPhase = state.starts.filter((s) => s.at >= openerAt).length;
      if (inPhase >= limit - 1) {
        // The held-back slot: no earlier than the instant the opener's slot frees if the server
        // counted from its arrival, and still before it could free if it counted from the answer.
        const p = Math.max(
          base,
          openerSent + openerResetMs + margin / 2,
          headersBound(state, margin),
          logBound(state.starts, limit, windowMs + margin),
        );
        if (p < openerSent + windowMs) {
          t = p;
          reason = 'probe';
          isProbe = true;
        } else {
          probe = { state: 'none' };
          t = Math.max(base, headersBound(state, margin), logBound(state.starts, limit, windowMs + margin));
        }
      }
    }
  }

  const startAtMs = Math.ceil(t);
  if (startAtMs - nowMs > maxAheadMs) {
    return { state: probe === state.probe ? state : { ...state, probe }, startAtMs, reserved: false, reason };
  }

  if (
    isProbe &&
    probe.state === 'armed' &&
    probe.openerSent !== undefined &&
    probe.openerResetMs !== undefined
  ) {
    probe = {
      state: 'pending',
      openerAt: probe.openerAt,
      openerSent: probe.openerSent,
      openerResetMs: probe.openerResetMs,
      probeAt: startAtMs,
    };
  } else if (state.headerDelayMs === null && (probe.state === 'none' || probe.state === 'failed')) {
    // Arm the probe at a clean point: nothing of ours in the window before this start, so it
    // opens a fresh window (its answer must confirm that).
    const clean =
      windowMs === null
        ? state.starts.length === 0
        : state.starts.every((s) => effective(s) <= startAtMs - windowMs - margin);
    if (clean) probe = { state: 'armed', openerAt: startAtMs };
  }
  const entry: PacerStart = isProbe ? { at: startAtMs, probe: true } : { at: startAtMs };
  const starts = pruneStarts([...state.starts, entry], limit);
  return {
    state: { ...state, starts, probe, nextAtMs: startAtMs + minSpacingMs },
    startAtMs,
    reserved: true,
    reason,
  };
}

/** The newest answer's Remaining, less the starts reserved after it, must leave a slot. */
function headersBound(state: PacerState, margin: number): number {
  const h = state.last;
  if (h === null) return Number.NEGATIVE_INFINITY;
  const after = state.starts.filter((s) => s.at > h.at).length;
  if (h.remaining - after >= 1) return Number.NEGATIVE_INFINITY;
  return slotFreesAt(state, h) + margin;
}

function pruneStarts(starts: PacerStart[], limit: number | null): PacerStart[] {
  starts.sort((a, b) => a.at - b.at);
  const keep = Math.max(MIN_STARTS_KEPT, 3 * (limit ?? 0));
  return starts.length > keep ? starts.slice(starts.length - keep) : starts;
}

/** Records an answer (any status; no headers = the request still counted). */
export function applyAnswer(state: PacerState, input: AnswerInput): PacerState {
  const a = parse(answerInputSchema, input, 'recordPacerAnswer');
  const starts = state.starts.map((s) => ({ ...s }));
  // The reservation this request used: the given one, else the latest open one at or before its start.
  let idx = -1;
  if (a.reservedStartMs !== null && a.reservedStartMs !== undefined) {
    idx = starts.findIndex((s) => s.at === a.reservedStartMs);
  }
  if (idx < 0) {
    for (let i = starts.length - 1; i >= 0; i--) {
      if (!starts[i]!.done && starts[i]!.at <= a.requestStartMs + 1) {
        idx = i;
        break;
      }
    }
  }
  if (idx < 0) {
    // Not reserved here (or pruned): it still happened and counts.
    starts.push({ at: a.requestStartMs });
    starts.sort((x, y) => x.at - y.at);
    idx = starts.findIndex((s) => s.at === a.requestStartMs && !s.done);
  }
  const entry = starts[idx]!;
  entry.sent = Math.max(entry.at, a.requestStartMs);
  const rate = a.rateLimit;
  const refused = a.retryAfterSeconds !== null && a.retryAfterSeconds !== undefined;
  entry.done = rate !== null || refused ? 'h' : 'n';

  let next: PacerState = { ...state, starts };
  if (refused) {
    const waitMs = (a.retryAfterSeconds ?? rate?.resetSeconds ?? 0) * 1000;
    next.blockedUntilMs = Math.max(state.blockedUntilMs ?? 0, a.answerAtMs + waitMs);
    // Our picture was wrong: count from the answer again and learn anew at the next clean point.
    next.headerDelayMs = null;
    next.probe = { state: 'none' };
  }
  if (rate === null) {
    if (entry.probe && state.probe.state === 'pending' && !refused) next.probe = { state: 'none' };
    return next;
  }

  next.limit = rate.limit;
  const headers: PacerHeaders = {
    at: entry.at,
    startMs: entry.sent,
    answerMs: a.answerAtMs,
    limit: rate.limit,
    remaining: rate.remaining,
    resetMs: rate.resetSeconds * 1000,
  };
  if (state.last === null || headers.at >= state.last.at) next.last = headers;
  if (refused) return next;

  // The server holds n = limit - remaining requests: this one and the n - 1 before it. Walk back
  // over the starts it certainly saw (answered with headers); skipping uncertain ones only goes
  // further back, which overestimates W: safe.
  const n = rate.limit - rate.remaining;
  let oldest: PacerStart | null = entry;
  let need = n - 1;
  for (let i = idx - 1; i >= 0 && need > 0; i--) {
    if (starts[i]!.done === 'h') {
      oldest = starts[i]!;
      need--;
    }
  }
  if (need > 0) oldest = null; // not enough history (pruned, or the server counts others): no observation
  if (oldest !== null && n >= 1) {
    const o = effective(oldest);
    const obs: PacerObservation = {
      answerAt: a.answerAtMs,
      fromAnswer: a.answerAtMs + headers.resetMs - o,
      fromStart: entry.sent + headers.resetMs - o,
    };
    next.observations = [...state.observations, obs].slice(-OBSERVATIONS_KEPT);
  }

  next = advanceProbe(next, entry, headers, n);
  return next;
}

function advanceProbe(state: PacerState, entry: PacerStart, h: PacerHeaders, n: number): PacerState {
  const p = state.probe;
  if (p.state === 'armed' && entry.at === p.openerAt) {
    // The opener must have found a fresh window (or log): then Reset = W - (c - arrival).
    if (n !== 1) return { ...state, probe: { state: 'none' } };
    return { ...state, probe: { ...p, openerSent: h.startMs, openerResetMs: h.resetMs } };
  }
  if (p.state === 'pending' && entry.probe) {
    const phase = state.starts.filter((s) => s.at > p.openerAt && s.at < p.probeAt);
    // The server holds the probe, the phase requests it counted and, unless its slot freed,
    // the opener. Those answered with headers were counted; those without may or may not be.
    const certain = phase.filter((s) => s.done === 'h').length;
    if (n <= certain + 1) {
      return {
        ...state,
        headerDelayMs: Math.max(0, h.startMs - p.openerSent - p.openerResetMs),
        probe: { state: 'none' },
      };
    }
    if (n <= phase.length + 1) return { ...state, probe: { state: 'none' } }; // inconclusive
    return {
      ...state,
      probe: {
        state: 'failed',
        reason: `the opener was still counted ${h.startMs - p.openerSent} ms after it started (Reset ${p.openerResetMs} ms): headers are counted from the answer`,
      },
    };
  }
  return state;
}

/** Forgets a reservation that was never sent. */
export function releaseReservation(state: PacerState, startAtMs: number): PacerState {
  const starts = state.starts.filter((s) => !(s.at === startAtMs && !s.done));
  let probe = state.probe;
  if (
    (probe.state === 'armed' && probe.openerAt === startAtMs) ||
    (probe.state === 'pending' && probe.probeAt === startAtMs)
  )
    probe = { state: 'none' };
  return { ...state, starts, probe };
}

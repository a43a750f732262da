import { z } from 'zod';
import { ConfigError, type RateLimitInfo } from '../errors.ts';
import { rejectedBackoffMs, roundingPadMs } from './backoff.ts';
import { LONGEST_WINDOW_SECONDS } from './rate-limit-headers.ts';

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
/** Anchor observations kept (answers the server held alone; a new one comes after every pause of a window). */
const ANCHORS_KEPT = 5;
/** Answers the server held alone kept for the bound their spacing puts on W. */
const ALONE_KEPT = 8;
/** Before headers: a start never answered counts as lost after this many spacings. */
const STALE_SPACINGS = 10;

export interface PacerStart {
  /** The reserved start. */
  at: number;
  /** When it was actually sent (from the answer), if later than `at` it counts from then. */
  sent?: number;
  /**
   * 'h': answered with trustworthy rate-limit headers (the server counted it); 'u': answered
   * with headers by a server that may not have counted it (a 429, suspect headers); 'n':
   * answered without (5xx, lost). Only 'h' answers are walked back over to learn the window.
   */
  done?: 'h' | 'u' | 'n';
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
  /** The rounding pad included in both (a whole-unit Reset may be a unit early); 0 when none. */
  padMs?: number;
  /** The server held this request alone (n = 1): the oldest counted is the request itself. */
  alone?: true;
  /** The walk back to the oldest passed only answers with headers: no start skipped, so none older. */
  walked?: true;
  /**
   * An anchor's tighter bounds of W: the earliest instant the answers counted in its window
   * named (each names the anchor's expiry or a later one), counted from their answers and from
   * their starts (plus the learned delay, as `fromStart` is), less the anchor's start.
   * Whole-second Resets taken at different offsets into the window name that instant to within
   * a fraction of a unit, where one answer alone leaves a whole unit's pad. Never unpadded. The
   * earliest of many answers is the one most likely to undercut W if the delay held for the
   * probe's answer only: the probe teaches a delay only when it can tell headers computed at
   * the arrival from headers computed at the answer (`openerSlackMs`).
   */
  runFromAnswer?: number;
  runFromStart?: number;
}

export interface PacerHeaders {
  /** The request's reserved start (identifies it in `starts`) and actual start. */
  at: number;
  startMs: number;
  answerMs: number;
  limit: number;
  remaining: number;
  resetMs: number;
  /** The rounding pad included in resetMs (0 or absent: none). */
  padMs?: number;
}

export type ProbeState =
  /** Not started; arms at the next clean point while δ is unknown. */
  | { state: 'none' }
  /** The opener was reserved at `openerAt`; the window holds one slot back. */
  | {
      state: 'armed';
      openerAt: number;
      openerSent?: number;
      openerResetMs?: number;
      /** The opener's latency less the most its padded Reset can exceed the true remainder. */
      openerSlackMs?: number;
    }
  /** The probe was reserved at `probeAt`. */
  | {
      state: 'pending';
      openerAt: number;
      openerSent: number;
      openerResetMs: number;
      openerSlackMs?: number;
      probeAt: number;
    }
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
  /** 429s in a row (the backoff grows with it); absent in rows written before it existed. */
  rejectedInARow?: number;
  /** nextAtMs - at of the latest reservation: a released latest reservation gives its spacing back. */
  gapMs?: number;
  /** A Reset that is not a whole number of units was seen: this server sends exact values, no rounding pad. */
  exactResets?: true;
  /** Observations of answers the server held alone (kept longer: they anchor the window). */
  anchors?: PacerObservation[];
  /**
   * 'sliding': a probe saw the opener's slot free while the rest of its window was still
   * counted (slots free one by one, and the log over the learned window is the server's);
   * 'fixed': the whole window rolled at once. Unknown until a probe concluded.
   */
  windowKind?: 'sliding' | 'fixed';
  /**
   * Two answers in one window named instants as far apart as their starts: this server's Reset
   * is a full window from each arrival (each request's own expiry), not the next free slot. Its
   * Remaining still counts; the log over the learned window (an upper bound: an answer held
   * alone names its own expiry) says when a slot frees.
   */
  ownExpiryResets?: true;
  /**
   * The current run of answers counted in one window (each one's count grew by exactly the
   * requests since the run's first): its first answer, its newest, and the earliest instant any
   * of them named. Each names an upper bound of when the window's next slot frees (a fixed
   * window's end, or the oldest counted request's expiry, which no answer of the run saw leave;
   * a Reset a full window from the arrival names a later one): the earliest is the tightest.
   */
  windowRun?: {
    first: PacerHeaders;
    newestAt: number;
    namedMs: number;
    /** Without the rounding pad: the earliest instant named counted from the learned delay... */
    upperRawMs?: number;
    /** ...and the latest counted from the start (a header instant is never before its request's start). */
    lowerRawMs?: number;
  };
  /**
   * 'up': a probe found the slot free before the latest instant this window's answers named
   * without the pad, so this server rounds Reset up (a whole-second value is never early) and
   * pays no pad; 'down': it did not, the pad stays.
   */
  rounding?: 'up' | 'down';
  /** The pending rounding probe: the window's last slot, sent between the two bounds. */
  roundingProbe?: { at: number; first: PacerHeaders; upperRawMs: number; lowerRawMs: number };
  /**
   * The pending rounding question of a sliding log (which never has a window's last slot to
   * ask it with): the slot that freed first was left unused, and this start went out between
   * the two instants the NEXT slot (`slotAt`) frees at if Reset rounds up and if it rounds down.
   */
  slotProbe?: { at: number; slotAt: number };
  /**
   * Answers the server held alone (n = 1), oldest first: `at`, the request's start, and
   * `after`, the latest start before it answered with headers (certainly counted, and no
   * longer by the time `at` arrived). See `aloneBoundMs`.
   */
  alone?: { at: number; after: number }[];
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
  /**
   * A reservation's request may go out this much after its instant (a timer that fires late);
   * the next reservation keeps the spacing from that latest send. @default 0
   */
  lateToleranceMs?: number;
  /** The longest window the upstream may have (config.longestWindowMs). @default 60000 */
  longestWindowMs?: number;
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
  /** The jitter draw in [0, 1) for a 429's backoff. @default 0.5 */
  jitter?: number;
  /** A whole multiple of this in Reset / Retry-After may be that much early (rounded down). @default 0 */
  resetGranularityMs?: number;
  /** The longest window the upstream may have: a 429's backoff grows to twice that. @default 60000 */
  longestWindowMs?: number;
}

const finite = z.number().refine(Number.isFinite, { error: 'must be a finite number' });
const nonNegative = finite.refine((n) => n >= 0, { error: 'must be >= 0' });
const reserveInputSchema = z.object({
  nowMs: finite,
  minSpacingMs: nonNegative,
  maxAheadMs: nonNegative,
  safetyMarginMs: nonNegative,
  lateToleranceMs: nonNegative.optional(),
  longestWindowMs: nonNegative.optional(),
});
const answerInputSchema = z.object({
  requestStartMs: finite,
  reservedStartMs: finite.nullish(),
  answerAtMs: finite,
  rateLimit: z
    .object({
      limit: nonNegative,
      remaining: nonNegative,
      resetSeconds: nonNegative,
      suspect: z.string().optional(),
      rejectedInARow: nonNegative.optional(),
    })
    .nullable(),
  retryAfterSeconds: nonNegative.nullish(),
  jitter: nonNegative.optional(),
  resetGranularityMs: nonNegative.optional(),
  longestWindowMs: nonNegative.optional(),
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
  // An answer the server held alone names its own expiry under every reading of Reset (the
  // window's next free slot, the oldest counted request, a full window from the arrival): the
  // tightest bound. Others name an older request's slot, or (Reset a full window from the
  // arrival) the answer's own, counted from an older start: too long by the gap. So the anchors
  // decide when there are any; the rest only before.
  const anchors = state.anchors ?? [];
  const pool = anchors.length > 0 ? anchors : state.observations;
  let w = Number.NEGATIVE_INFINITY;
  const d = state.headerDelayMs;
  for (const o of pool) {
    const unpad = state.exactResets || state.rounding === 'up' ? (o.padMs ?? 0) : 0;
    const own = fromHeaderInstant(o.fromAnswer, o.fromStart, d) - unpad;
    const run =
      o.runFromAnswer === undefined
        ? Number.POSITIVE_INFINITY
        : fromHeaderInstant(o.runFromAnswer, o.runFromStart, d);
    w = Math.max(w, Math.min(own, run));
  }
  return Math.min(w, aloneBoundMs(state.alone));
}

/**
 * A bound counted from the answer, or from the start plus the learned header delay when that
 * is earlier (the header instant is no later than either).
 */
function fromHeaderInstant(fromAnswer: number, fromStart: number | undefined, d: number | null): number {
  return d === null || fromStart === undefined ? fromAnswer : Math.min(fromAnswer, fromStart + d);
}

/**
 * An upper bound of W from the answers the server held alone, whatever the window's kind or
 * Reset's reading: each says every counted request before it had left, so a window ended (a
 * fixed window rolled, or a sliding log's last entry expired) between `after` and `at`. Those
 * intervals are disjoint, and windows do not overlap: k of them later, at least k windows have
 * passed, so W <= (at_k - after_0) / k. A window on the clock, whose anchors name the window's
 * end rather than their own expiry and whose probe cannot conclude, is learned this way to
 * within the gaps around its rolls divided by their count.
 */
function aloneBoundMs(alone: PacerState['alone']): number {
  let bound = Number.POSITIVE_INFINITY;
  if (alone === undefined) return bound;
  for (let j = 0; j < alone.length; j++)
    for (let k = j + 1; k < alone.length; k++)
      bound = Math.min(bound, (alone[k]!.at - alone[j]!.after) / (k - j));
  return bound;
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
    lateToleranceMs = 0,
    longestWindowMs = LONGEST_WINDOW_SECONDS * 1000,
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
  let roundingAt: number | null = null;
  let slotProbe: PacerState['slotProbe'];

  if (windowMs === null || limit === null) {
    // No window learned yet (no answer, or none whose count could be walked back over answers
    // that certainly counted): the newest headers still bound it.
    raise(headersBound(state, margin, longestWindowMs), 'headers');
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
    if (!isProbe) {
      const at = roundingProbeAt(state, t, margin);
      if (at !== null) {
        t = at;
        reason = 'probe';
        roundingAt = at;
      }
    }
    const waitsForSlot = (reason as PacerReason) === 'window' || (reason as PacerReason) === 'headers';
    if (!isProbe && roundingAt === null && waitsForSlot) {
      const sp = slotProbeAt(state, t, margin, limit);
      if (sp !== null) {
        t = sp.at;
        reason = 'probe';
        slotProbe = sp;
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
      ...(probe.openerSlackMs === undefined ? {} : { openerSlackMs: probe.openerSlackMs }),
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
  const run = state.windowRun;
  return {
    state: {
      ...state,
      ...(roundingAt !== null && run?.upperRawMs !== undefined && run.lowerRawMs !== undefined
        ? {
            roundingProbe: {
              at: startAtMs,
              first: run.first,
              upperRawMs: run.upperRawMs,
              lowerRawMs: run.lowerRawMs,
            },
          }
        : {}),
      ...(slotProbe !== undefined ? { slotProbe: { at: startAtMs, slotAt: slotProbe.slotAt } } : {}),
      starts,
      probe,
      nextAtMs: startAtMs + minSpacingMs + lateToleranceMs,
      gapMs: minSpacingMs + lateToleranceMs,
    },
    startAtMs,
    reserved: true,
    reason,
  };
}

/**
 * The newest answer's Remaining, less the starts reserved after it, must leave a slot; else
 * the start waits for the slot its Reset names. That Reset names ONE slot: once the starts
 * after it have used more than Remaining + 1, the next slot frees when some other request
 * leaves the window, which only the log can tell. Without a learned window (`noWindow`) the
 * start then waits until every request the answer counted, and each one after it beyond the
 * window's count, has left a window of the longest kind the notes report.
 */
function headersBound(state: PacerState, margin: number, noWindowLongestMs: number | null = null): number {
  const noWindow = noWindowLongestMs !== null;
  const h = state.last;
  if (h === null) return Number.NEGATIVE_INFINITY;
  const after = state.starts.filter((s) => s.at > h.at);
  if (h.remaining - after.length >= 1) return Number.NEGATIVE_INFINITY;
  // A sliding log whose window is learned: when the server counted no more of our requests
  // than the log holds at the answer, the log is the server's picture and decides (a Reset
  // that names the answer's own expiry, a full window away, would otherwise cost a window).
  const w = noWindow ? null : windowEstimateMs(state);
  if ((state.windowKind === 'sliding' || state.ownExpiryResets) && w !== null) {
    // The server counted at its header instant (no later than start + the learned delay): the
    // log's picture is the window before that instant.
    const headerAt = slotFreesAt(state, h) - h.resetMs;
    const logged = state.starts.filter((s) => s.at <= h.at && effective(s) > headerAt - w).length;
    if (h.limit - h.remaining <= logged) return Number.NEGATIVE_INFINITY;
  }
  const run = state.windowRun;
  const named =
    Math.min(
      slotFreesAt(state, h),
      run !== undefined && run.newestAt === h.at ? run.namedMs : Number.POSITIVE_INFINITY,
    ) + margin;
  if (!noWindow || h.remaining - after.length >= 0) return named;
  const longest = noWindowLongestMs ?? LONGEST_WINDOW_SECONDS * 1000;
  const limit = state.limit ?? h.limit;
  const beyond = after.length - limit;
  const drained = Math.max(
    h.answerMs + longest,
    beyond >= 0 ? effective(after[beyond]!) + longest : Number.NEGATIVE_INFINITY,
  );
  return Math.max(named, drained + margin);
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
  const suspect = rate?.suspect !== undefined;
  entry.done = rate === null && !refused ? 'n' : refused || suspect ? 'u' : 'h';
  const granularity = a.resetGranularityMs ?? 0;

  let next: PacerState = { ...state, starts };
  if (refused) {
    // The server's wait, or the backoff of this many 429s in a row when that is longer: a
    // window that counts refused requests drains only if we stop long enough (backoff.ts).
    const k = (state.rejectedInARow ?? 0) + 1;
    const askedMs = (a.retryAfterSeconds ?? rate?.resetSeconds ?? 0) * 1000;
    const waitMs = Math.max(
      askedMs + roundingPadMs(askedMs, granularity),
      rejectedBackoffMs(k, a.jitter ?? 0.5, a.longestWindowMs),
    );
    next.rejectedInARow = k;
    next.blockedUntilMs = Math.max(state.blockedUntilMs ?? 0, a.answerAtMs + waitMs);
    // Our picture was wrong: count from the answer again and learn the window anew.
    next.headerDelayMs = null;
    next.probe = { state: 'none' };
    next.observations = [];
    next.anchors = [];
    delete next.windowKind;
    delete next.ownExpiryResets;
    delete next.windowRun;
    delete next.rounding;
    delete next.roundingProbe;
    delete next.slotProbe;
    delete next.alone;
  } else if (rate !== null) {
    next.rejectedInARow = 0;
  }
  if (state.roundingProbe?.at === entry.at) delete next.roundingProbe;
  if (state.slotProbe?.at === entry.at) delete next.slotProbe;
  if (rate === null) {
    if (entry.probe && state.probe.state === 'pending' && !refused) next.probe = { state: 'none' };
    return next;
  }

  // A suspect answer (a header unreadable or capped) says the safe thing for now, nothing to learn from.
  if (!suspect) next.limit = rate.limit;
  const resetMs = rate.resetSeconds * 1000;
  const padMs = roundingPadMs(resetMs, granularity);
  if (granularity > 0 && padMs === 0 && !suspect) next.exactResets = true;
  const headers: PacerHeaders = {
    at: entry.at,
    startMs: entry.sent,
    answerMs: a.answerAtMs,
    limit: rate.limit,
    remaining: rate.remaining,
    // A whole-second Reset may have been rounded down: it names an instant up to a unit later
    // (unless this server was seen to send exact values).
    resetMs: resetMs + (next.exactResets || state.rounding === 'up' ? 0 : padMs),
    ...(next.exactResets || state.rounding === 'up' || padMs === 0 ? {} : { padMs }),
  };
  if (refused || suspect) {
    if (state.last === null || headers.at >= state.last.at) next.last = headers;
    return next;
  }
  const run = state.windowRun;
  if (run !== undefined && inOneWindow(starts, run.first, headers)) {
    if (!next.ownExpiryResets && namesOwnExpiry(state, run.first, headers, granularity))
      next.ownExpiryResets = true;
    next.windowRun = {
      first: run.first,
      newestAt: Math.max(run.newestAt, headers.at),
      namedMs: Math.min(run.namedMs, slotFreesAt(state, headers)),
      upperRawMs: Math.min(run.upperRawMs ?? Number.POSITIVE_INFINITY, rawUpper(state, headers)),
      lowerRawMs: Math.max(run.lowerRawMs ?? Number.NEGATIVE_INFINITY, rawLower(headers)),
    };
    // Not on a rounding only inferred as 'up' (no pad): a window that rolls before the instant
    // its answers name (one on the clock, its Reset counted from the oldest request) passes
    // that probe too, and unpadded instants could then undercut W.
    if (next.exactResets || state.rounding !== 'up')
      next.anchors = tightenAnchor(state.anchors, run.first, headers);
  } else {
    next.windowRun = {
      first: headers,
      newestAt: headers.at,
      namedMs: slotFreesAt(state, headers),
      upperRawMs: rawUpper(state, headers),
      lowerRawMs: rawLower(headers),
    };
  }
  const rp = state.roundingProbe;
  if (rp !== undefined && entry.at === rp.at) {
    delete next.roundingProbe;
    const verdict = roundingVerdict(starts, rp, headers);
    if (verdict !== null) next.rounding = verdict.rounding;
    if (verdict?.windowKind !== undefined && next.windowKind === undefined)
      next.windowKind = verdict.windowKind;
  }
  const sp = state.slotProbe;
  if (sp !== undefined && entry.at === sp.at && next.rounding === undefined) {
    const verdict = slotProbeVerdict(starts, sp, rate.limit - rate.remaining);
    if (verdict !== null) next.rounding = verdict;
  }
  if (state.last === null || headers.at >= state.last.at) next.last = headers;

  // The server holds n = limit - remaining requests: this one and the n - 1 before it. Walk back
  // over the starts it certainly saw (answered with headers); skipping uncertain ones only goes
  // further back, which overestimates W: safe.
  const n = rate.limit - rate.remaining;
  let oldest: PacerStart | null = entry;
  let need = n - 1;
  let skipped = false;
  for (let i = idx - 1; i >= 0 && need > 0; i--) {
    if (starts[i]!.done === 'h') {
      oldest = starts[i]!;
      need--;
    } else skipped = true;
  }
  if (need > 0) oldest = null; // not enough history (pruned, or the server counts others): no observation
  if (oldest !== null && n >= 1) {
    const o = effective(oldest);
    const obs: PacerObservation = {
      answerAt: a.answerAtMs,
      fromAnswer: a.answerAtMs + headers.resetMs - o,
      fromStart: entry.sent + headers.resetMs - o,
      ...(headers.resetMs !== resetMs ? { padMs: headers.resetMs - resetMs } : {}),
      ...(n === 1 ? { alone: true as const } : {}),
      ...(skipped ? {} : { walked: true as const }),
    };
    next.observations = [...state.observations, obs].slice(-OBSERVATIONS_KEPT);
    if (n === 1) next.anchors = [...(state.anchors ?? []), obs].slice(-ANCHORS_KEPT);
  }
  if (n === 1) {
    const at = effective(entry);
    let after: number | null = null;
    for (const s of starts)
      if (s !== entry && s.done === 'h' && effective(s) < at && (after === null || effective(s) > after))
        after = effective(s);
    if (after !== null) next.alone = [...(state.alone ?? []), { at, after }].slice(-ALONE_KEPT);
  }

  next = advanceProbe(next, entry, headers, n, run, granularity);
  return next;
}

/**
 * When the run's first answer was held alone (an anchor), every answer counted in its window
 * names the anchor's expiry or a later instant (a fixed window's end, the oldest counted
 * request's expiry, the next free slot, its own expiry), so the earliest of them bounds the
 * anchor's W from its start.
 */
function tightenAnchor(
  anchors: PacerObservation[] | undefined,
  first: PacerHeaders,
  h: PacerHeaders,
): PacerObservation[] | undefined {
  if (anchors === undefined || first.limit - first.remaining !== 1) return anchors;
  const fromAnswer = h.answerMs + h.resetMs - first.startMs;
  const fromStart = h.startMs + h.resetMs - first.startMs;
  return anchors.map((o) =>
    o.answerAt === first.answerMs
      ? {
          ...o,
          runFromAnswer: Math.min(o.runFromAnswer ?? Number.POSITIVE_INFINITY, fromAnswer),
          runFromStart: Math.min(o.runFromStart ?? Number.POSITIVE_INFINITY, fromStart),
        }
      : o,
  );
}

/** The instant `h` names without its pad, counted from the learned delay (an upper bound if Reset rounds up). */
function rawUpper(state: PacerState, h: PacerHeaders): number {
  return slotFreesAt(state, h) - (h.padMs ?? 0);
}

/** The same counted from the start: the server's header instant is no earlier (a lower bound if Reset rounds down). */
function rawLower(h: PacerHeaders): number {
  return h.startMs + h.resetMs - (h.padMs ?? 0);
}

/**
 * The rounding probe's answer. It went out with one slot left, after every instant the window's
 * answers named if Reset rounds up and before every one they named if it rounds down. A slot
 * that left the window by then (the count did not grow by the probe) cannot be a server that
 * rounds down: 'up'; and the count says what left, the whole window (fixed) or the one slot
 * (sliding). The count grown by exactly the probe cannot be one that rounds up: 'down'.
 */
function roundingVerdict(
  starts: PacerStart[],
  rp: NonNullable<PacerState['roundingProbe']>,
  h: PacerHeaders,
): { rounding: 'up' | 'down'; windowKind?: 'fixed' | 'sliding' } | null {
  const between = answeredBetween(starts, rp.first.at, rp.at);
  if (between === null) return null;
  const before = rp.first.limit - rp.first.remaining + between;
  const n = h.limit - h.remaining;
  if (n === before + 1) return { rounding: 'down' };
  if (n > before) return null;
  // What left: the whole window (fixed), or exactly the oldest slot while the rest stayed (sliding).
  if (before >= 2 && n === 1) return { rounding: 'up', windowKind: 'fixed' };
  if (before >= 2 && n === before) return { rounding: 'up', windowKind: 'sliding' };
  return { rounding: 'up' };
}

/**
 * Whether the rounding question may be asked now: the answer is not known (exact values, a
 * Reset that names each request's own expiry, a verdict), no question is pending (either kind;
 * one whose request was lost leaves it unasked, which is safe), and the delay probe is not
 * holding a slot.
 */
function mayAskRounding(state: PacerState): boolean {
  return !(
    state.exactResets ||
    state.ownExpiryResets ||
    state.rounding !== undefined ||
    state.roundingProbe !== undefined ||
    state.slotProbe !== undefined ||
    state.probe.state === 'armed' ||
    state.probe.state === 'pending'
  );
}

/**
 * The rounding probe's instant, when this reservation is the window's last slot and the
 * window's answers leave room between their two bounds (wider than the delay twice and the
 * margin): the middle, or null.
 */
function roundingProbeAt(state: PacerState, t: number, margin: number): number | null {
  const run = state.windowRun;
  const h = state.last;
  if (!mayAskRounding(state)) return null;
  if (run === undefined || h === null || run.newestAt !== h.at || (h.padMs ?? 0) === 0) return null;
  if (run.upperRawMs === undefined || run.lowerRawMs === undefined) return null;
  const after = state.starts.filter((s) => s.at > h.at);
  if (h.remaining - after.length !== 1) return null;
  const delay = Math.min(h.answerMs - h.startMs, state.headerDelayMs ?? Number.POSITIVE_INFINITY);
  // One instant named by all (within a unit and the delay), and room around the middle.
  const spread = run.lowerRawMs - run.upperRawMs;
  if (spread <= 2 * delay + margin || spread > (h.padMs ?? 0) + delay) return null;
  const at = Math.max(t, (run.upperRawMs + run.lowerRawMs) / 2);
  return at + delay + margin / 2 < run.lowerRawMs ? Math.ceil(at) : null;
}

/**
 * The rounding question for a sliding log. Each answer bounds W from the oldest request it
 * counted: if Reset rounds up, W is at most (its header instant + Reset) - that start, the
 * header instant counted from the learned delay (U, the least of them); if down, at least
 * (its start + Reset) - that start (L, the greatest). The two readings differ by a whole unit,
 * and answers taken at different offsets into the second leave room between U and L. The slot
 * that frees first (the `limit`-th newest start's) is left unused, and the start goes out when
 * the next one has left the log if Reset rounds up and is still in it if it rounds down: the
 * middle of the two. It goes out no earlier than its normal instant (the slot left unused is
 * free under either reading), so the question itself is never refused; it costs the gap
 * between the two slots once. Only for a log learned to be sliding, while the rounding is
 * unknown.
 */
function slotProbeAt(
  state: PacerState,
  t: number,
  margin: number,
  limit: number,
): { at: number; slotAt: number } | null {
  if (state.windowKind !== 'sliding' || !mayAskRounding(state)) return null;
  const d = state.headerDelayMs;
  const obs = state.observations.filter((o) => o.padMs !== undefined && o.walked);
  if (obs.length < limit) return null;
  const pad = Math.max(...obs.map((o) => o.padMs!));
  const upper = Math.min(...obs.map((o) => fromHeaderInstant(o.fromAnswer, o.fromStart, d) - o.padMs!));
  const lower = Math.max(...obs.map((o) => o.fromStart - o.padMs!));
  // One W named by all (within a unit and the delay: answers that name their own expiry, a
  // window away from the oldest, spread further), and room around the middle.
  if (lower - upper <= 2 * margin || lower - upper > pad + (d ?? Number.POSITIVE_INFINITY)) return null;
  const sorted = [...state.starts].sort((a, b) => effective(a) - effective(b));
  if (sorted.length < limit + 1) return null;
  const next = sorted[sorted.length - limit + 1]!;
  if (next.done !== 'h') return null;
  const at = Math.max(t, effective(next) + (upper + lower) / 2);
  if (at + margin / 2 >= effective(next) + lower || at - margin / 2 <= effective(next) + upper) return null;
  return { at: Math.ceil(at), slotAt: next.at };
}

/**
 * The sliding rounding question's answer: the server holds the probe, every start after the
 * slot asked about (each answered with headers) and, if Reset rounds down, that slot. Any other
 * count (a start without headers, a window that rolled) answers nothing.
 */
function slotProbeVerdict(
  starts: PacerStart[],
  sp: NonNullable<PacerState['slotProbe']>,
  n: number,
): 'up' | 'down' | null {
  const between = answeredBetween(starts, sp.slotAt, sp.at);
  if (between === null) return null;
  if (n === between + 1) return 'up';
  if (n === between + 2) return 'down';
  return null;
}

/**
 * Whether `h` was counted in the same window as the older answer `first`: every request between
 * them was answered with headers, and the count grew by exactly those requests (nothing left the
 * window, no window rolled).
 */
function inOneWindow(starts: PacerStart[], first: PacerHeaders, h: PacerHeaders): boolean {
  if (first.at >= h.at) return false;
  const between = answeredBetween(starts, first.at, h.at);
  // The count grew by the requests between and by `h` itself.
  return between !== null && h.limit - h.remaining === first.limit - first.remaining + between + 1;
}

/**
 * How many starts lie strictly between `firstAt` and `endAt`, when the start at `firstAt` and
 * every one of those was answered with headers (the server certainly counted each); else null.
 */
function answeredBetween(starts: PacerStart[], firstAt: number, endAt: number): number | null {
  const between = starts.filter((s) => s.at > firstAt && s.at < endAt);
  if (starts.find((s) => s.at === firstAt)?.done !== 'h' || between.some((s) => s.done !== 'h')) return null;
  return between.length;
}

/**
 * Whether two answers of one window name instants that moved with their starts: a server whose
 * Reset names the next free slot (a fixed window's end, the oldest counted request's expiry)
 * names the same instant for both, give or take a rounding unit and the delay to its header
 * instant (the learned one, else the answer's whole latency).
 */
function namesOwnExpiry(
  state: PacerState,
  first: PacerHeaders,
  h: PacerHeaders,
  granularityMs: number,
): boolean {
  const d = state.headerDelayMs;
  const delayOf = (x: PacerHeaders) => Math.min(x.answerMs - x.startMs, d ?? Number.POSITIVE_INFINITY);
  const startGap = h.startMs - first.startMs;
  const slack = granularityMs + Math.max(delayOf(h), delayOf(first));
  return startGap > 2 * slack && slotFreesAt(state, h) - slotFreesAt(state, first) > startGap - slack;
}

function advanceProbe(
  state: PacerState,
  entry: PacerStart,
  h: PacerHeaders,
  n: number,
  runBefore: PacerState['windowRun'],
  granularityMs: number,
): PacerState {
  const p = state.probe;
  if (p.state === 'armed' && entry.at === p.openerAt) {
    // The opener must have found a fresh window (or log): then Reset = W - (c - arrival).
    if (n !== 1) return { ...state, probe: { state: 'none' } };
    // A padded whole-second Reset exceeds the true remainder by up to its pad and one unit.
    const excess = state.exactResets ? 0 : (h.padMs ?? 0) + granularityMs;
    const openerSlackMs = h.answerMs - h.startMs - excess;
    return { ...state, probe: { ...p, openerSent: h.startMs, openerResetMs: h.resetMs, openerSlackMs } };
  }
  if (p.state === 'pending' && entry.probe) {
    const phase = state.starts.filter((s) => s.at > p.openerAt && s.at < p.probeAt);
    // The server holds the probe, the phase requests it counted and, unless its slot freed,
    // the opener. Those answered with headers were counted; those without may or may not be.
    const certain = phase.filter((s) => s.done === 'h').length;
    const uncertain = phase.length - certain;
    // Conclusive when the opener left and the phase is known: either every phase request is
    // still counted (a sliding log: n = the probe + the phase) or the whole window rolled (a
    // fixed window: n = 1). Either way the opener's slot was free at the probe.
    if (uncertain === 0 && (n === certain + 1 || n === 1)) {
      // 'sliding' only when the opener and the whole phase were counted in one window: a fixed
      // window that rolled between the opener and the phase (one on the clock) gives the same n.
      const oneWindow =
        runBefore !== undefined &&
        runBefore.first.at === p.openerAt &&
        (phase.length === 0 || runBefore.newestAt === phase[phase.length - 1]!.at);
      const kind = n === 1 ? ('fixed' as const) : oneWindow ? ('sliding' as const) : undefined;
      const delay = Math.max(0, h.startMs - p.openerSent - p.openerResetMs);
      // A slot found free only once the opener's latency (less its Reset's slack) had passed
      // says nothing of the header instant: headers computed at the answer free it by then too
      // (a probe pushed late by the log or the headers, a window that rolled). A delay learned
      // from such a probe undercut W for answers slower than the opener's (a 429 in the
      // property test: a clock window, headers at the answer). The next clean point tries again.
      // An opener that answered within its Reset's slack cannot tell them apart at all.
      const tellsDelay = p.openerSlackMs !== undefined && delay < p.openerSlackMs;
      return {
        ...state,
        ...(certain >= 1 && kind !== undefined ? { windowKind: kind } : {}),
        ...(tellsDelay ? { headerDelayMs: delay } : {}),
        probe: { state: 'none' },
      };
    }
    if (n <= certain + 1) return { ...state, probe: { state: 'none' } };
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

/**
 * Forgets a reservation that was never sent. When it was the latest, the spacing it held is
 * given back: the next reservation is spaced from the latest start that remains, so a request
 * that missed its instant (a late timer) and reserves again loses only its lateness.
 */
export function releaseReservation(state: PacerState, startAtMs: number): PacerState {
  const starts = state.starts.filter((s) => !(s.at === startAtMs && !s.done));
  let nextAtMs = state.nextAtMs;
  const latest = starts.length === 0 ? null : Math.max(...starts.map(effective));
  if (
    starts.length < state.starts.length &&
    state.gapMs !== undefined &&
    nextAtMs === startAtMs + state.gapMs &&
    (latest === null || latest < startAtMs)
  )
    nextAtMs = latest === null ? null : latest + state.gapMs;
  let probe = state.probe;
  if (
    (probe.state === 'armed' && probe.openerAt === startAtMs) ||
    (probe.state === 'pending' && probe.probeAt === startAtMs)
  )
    probe = { state: 'none' };
  const next: PacerState = { ...state, starts, probe, nextAtMs };
  if (state.slotProbe?.at === startAtMs) delete next.slotProbe;
  return next;
}

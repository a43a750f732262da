import type { TransactionSql } from 'postgres';
import type { RateLimitInfo } from '../errors.ts';
import {
  type AnswerInput,
  applyAnswer,
  decideReservation,
  emptyPacerState,
  PACER_STATE_VERSION,
  type PacerReason,
  type PacerState,
  releaseReservation,
  windowEstimateMs,
} from '../pacing/shared-pacer.ts';
import type { Db } from './client.ts';
import { withDbErrors } from './connection-errors.ts';

/*
 * The shared request pacer's row (table `pacers`, one row per upstream key). Thin: each call is
 * one short transaction that creates the row on first use, locks it (FOR UPDATE), lets the pure
 * model (shared/pacing/shared-pacer.ts; the reasoning: docs/architecture.md#pacing) decide, and writes the new state back.
 * Concurrent callers (Map iterations, separate invocations) are serialised by the row lock, so
 * two reservations can never take the same instant or break the spacing; a reservation is
 * durable as soon as the call returns.
 */

export interface ReservePacerSlotInput {
  /** The upstream's key, e.g. 'upstream' (one row per rate-limited API key). */
  key: string;
  nowMs: number;
  minSpacingMs: number;
  /** When the earliest allowed start is further away, nothing is reserved (wait in the state machine instead). */
  maxAheadMs: number;
  safetyMarginMs: number;
  /** A request may go out this much after its reserved instant; the next reservation is spaced from that. */
  lateToleranceMs?: number;
  /** The longest window the upstream may have. */
  longestWindowMs?: number;
}

export interface PacerSlot {
  /** The reserved start (reserved) or the earliest one allowed now (not reserved). Epoch ms. */
  startAtMs: number;
  reserved: boolean;
  /** What decided the instant. */
  reason: PacerReason;
}

export interface RecordPacerAnswerInput {
  key: string;
  /** When the request was actually sent (epoch ms). */
  requestStartMs: number;
  /** The `startAtMs` of the reservation it used, when known (matches it exactly). */
  reservedStartMs?: number | null;
  answerAtMs: number;
  /** The answer's rate-limit headers; null when it had none (a 5xx from a load balancer, a timeout). */
  rateLimit: RateLimitInfo | null;
  /** From a 429's Retry-After. */
  retryAfterSeconds?: number | null;
  /** The jitter draw in [0, 1) for a 429's backoff. */
  jitter?: number;
  /** The unit Reset is rounded to. */
  resetGranularityMs?: number;
  /** The longest window the upstream may have: a 429's backoff grows to twice that. */
  longestWindowMs?: number;
}

export interface ReleasePacerSlotInput {
  key: string;
  /** The `startAtMs` of a reservation that was never sent. */
  startAtMs: number;
}

/** Reserves the start of the next upstream request across every chain. */
export async function reservePacerSlot(db: Db, input: ReservePacerSlotInput): Promise<PacerSlot> {
  return withPacerRow(db, input.key, (state) => {
    const d = decideReservation(state, input);
    return { state: d.state, result: { startAtMs: d.startAtMs, reserved: d.reserved, reason: d.reason } };
  });
}

/** Records an answer (429 and 5xx included: without headers, the request still counted). */
export async function recordPacerAnswer(db: Db, input: RecordPacerAnswerInput): Promise<void> {
  const answer: AnswerInput = {
    requestStartMs: input.requestStartMs,
    reservedStartMs: input.reservedStartMs ?? null,
    answerAtMs: input.answerAtMs,
    rateLimit: input.rateLimit,
    retryAfterSeconds: input.retryAfterSeconds ?? null,
    ...(input.jitter === undefined ? {} : { jitter: input.jitter }),
    ...(input.resetGranularityMs === undefined ? {} : { resetGranularityMs: input.resetGranularityMs }),
    ...(input.longestWindowMs === undefined ? {} : { longestWindowMs: input.longestWindowMs }),
  };
  await withPacerRow(db, input.key, (state) => ({ state: applyAnswer(state, answer), result: undefined }));
}

/** Gives back a reservation that was never sent (the invocation gave up before its request). */
export async function releasePacerSlot(db: Db, input: ReleasePacerSlotInput): Promise<void> {
  await withPacerRow(db, input.key, (state) => ({
    state: releaseReservation(state, input.startAtMs),
    result: undefined,
  }));
}

/** The stored state (for status output and tests); the empty state when the key was never used. */
export async function getPacerState(db: Db, key: string): Promise<PacerState> {
  const sql = db.$client;
  return withDbErrors(sql, async () => {
    const rows = await sql<{ state: string }[]>`select state::text as state from pacers where key = ${key}`;
    return rows[0] ? readState(rows[0].state) : emptyPacerState();
  });
}

function readState(text: string): PacerState {
  const parsed = JSON.parse(text) as Partial<PacerState> | null;
  // An unknown shape (an older version) starts afresh: the model then learns again, safely.
  return parsed && parsed.v === PACER_STATE_VERSION ? (parsed as PacerState) : emptyPacerState();
}

async function withPacerRow<T>(
  db: Db,
  key: string,
  step: (state: PacerState) => { state: PacerState; result: T },
): Promise<T> {
  const sql = db.$client;
  return withDbErrors(sql, async () => {
    const out = await sql.begin(async (tx: TransactionSql) => {
      // state::text: a drizzle instance on the same client changes the json parser.
      await tx`insert into pacers (key, state) values (${key}, ${JSON.stringify(emptyPacerState())}::jsonb)
               on conflict (key) do nothing`;
      const rows = await tx<
        { state: string }[]
      >`select state::text as state from pacers where key = ${key} for update`;
      const before = readState(rows[0]!.state);
      const { state, result } = step(before);
      if (state !== before) {
        const windowMs = windowEstimateMs(state);
        await tx`update pacers set
                   state = ${JSON.stringify(state)}::jsonb,
                   next_at = ${state.nextAtMs === null ? null : new Date(state.nextAtMs).toISOString()}::timestamptz,
                   window_ms = ${windowMs === null ? null : Math.round(windowMs)},
                   header_delay_ms = ${state.headerDelayMs === null ? null : Math.round(state.headerDelayMs)},
                   updated_at = now()
                 where key = ${key}`;
      }
      return [result];
    });
    return out[0] as T;
  });
}

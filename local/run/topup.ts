import type { Checkpoint } from '#shared/db/checkpoints.ts';
import { sourceHeader, sourceTotals } from '#shared/step/totals.ts';
import type { RunningSimulator } from '../simulator/index.ts';
import type { LocalRunOptions } from './options.ts';

/** What a top-up's line needs of the run's summary (runner.ts LocalRunSummary). */
interface RunOutcome {
  status: 'complete' | 'failed' | 'interrupted';
  verified: boolean;
  events: number;
  topUp?: TopUpSummary | null;
}

/*
 * The local runner's top-ups: a complete source run again is topped up (shared/step/topup.ts
 * does the walk), and `--follow` keeps doing so every `--every` until Ctrl-C, one line each.
 */

export interface TopUpSummary {
  /** Rows this top-up stored (new events and late ones). */
  newEvents: number;
  /** Of these, rows below the floor (late beyond the lookback). */
  lateBeyondLookback: number;
  requests: number;
  /** The high-water mark after the top-up (ISO), null when it did not complete. */
  highWaterMark: string | null;
}

const n = (v: number) => v.toLocaleString('en-US');
const iso = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? null : new Date(ms).toISOString();

/** The line that says a complete source is being topped up, and down to where. */
export function topUpLine(
  options: Pick<LocalRunOptions, 'sourceId' | 'lookbackMs'>,
  head: Checkpoint,
  stored: number,
): string {
  const mark = iso(head.marks?.hwmTs) ?? 'its newest stored event';
  return (
    `source "${options.sourceId}" is complete (${n(stored)} events stored, high-water mark ${mark}): ` +
    `topping up what arrived since, down to the mark less the ${describeMs(options.lookbackMs)} lookback ` +
    '(--reset ingests it again from scratch)\n'
  );
}

/** What a run added as a top-up, or null when it began as a backfill (or its resumption). */
export function topUpOf(before: Checkpoint[], after: Checkpoint[]): TopUpSummary | null {
  const b = sourceHeader(before);
  const a = sourceHeader(after);
  if (!b || !a || !(b.status === 'complete' || (b.marks?.signpostTs ?? null) !== null)) return null;
  const tb = sourceTotals(before);
  const ta = sourceTotals(after);
  const late = (rows: Checkpoint[]) => rows.reduce((x, r) => x + (r.marks?.lateBeyondLookback ?? 0), 0);
  return {
    newEvents: ta.inserted - tb.inserted,
    lateBeyondLookback: late(after) - late(before),
    requests: ta.requests - tb.requests,
    highWaterMark: a.status === 'complete' ? iso(a.marks?.hwmTs) : null,
  };
}

/**
 * What the bundled simulator holds, to verify against; null for a real API, and for a simulator
 * that grows while the run counts (--grow-rate), whose count would already be stale.
 */
export function expectedOf(
  simulator: RunningSimulator | null,
  options: Pick<LocalRunOptions, 'growRate'>,
): number | null {
  return simulator && options.growRate === 0 ? simulator.dataset.expectedValidCount() : null;
}

/**
 * `--follow`: a top-up every `everyMs` until Ctrl-C (or a top-up that does not complete and
 * verify), one line per top-up. Returns the last summary: Ctrl-C between top-ups ends complete.
 */
export async function follow<S extends RunOutcome>(
  options: Pick<LocalRunOptions, 'everyMs' | 'sourceId'>,
  io: { out: (text: string) => void; signal?: AbortSignal | undefined },
  first: S,
  topUpOnce: () => Promise<S>,
): Promise<S> {
  io.out(`following "${options.sourceId}": a top-up every ${describeMs(options.everyMs)} until Ctrl-C\n`);
  let last = first;
  for (let k = 1; ; k++) {
    if (!(await pause(options.everyMs, io.signal))) return last;
    const startedAt = Date.now();
    const s = await topUpOnce();
    io.out(followLine(k, s, Date.now() - startedAt));
    last = s;
    if (s.status !== 'complete' || !s.verified) return s;
  }
}

/** One line per top-up. */
export function followLine(k: number, s: RunOutcome, ms: number): string {
  const t = s.topUp;
  const at = new Date().toISOString().slice(11, 19);
  if (!t) return `top-up ${k} at ${at}: ${s.status}\n`;
  const late = t.lateBeyondLookback > 0 ? ` (${n(t.lateBeyondLookback)} late beyond the lookback)` : '';
  const mark = t.highWaterMark ? `, high-water mark ${t.highWaterMark}` : `, ${s.status}`;
  return `top-up ${k} at ${at}: +${n(t.newEvents)} events${late}, ${n(t.requests)} request(s), ${(ms / 1000).toFixed(1)} s${mark}; ${n(s.events)} stored\n`;
}

/** true after `ms`, false at once when the signal aborts (Ctrl-C). */
function pause(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function describeMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

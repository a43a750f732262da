import type { CheckpointView, StatusReport } from './progress.ts';

/* The text of `npm run ingest -- status`. */

function duration(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${s % 60}s` : `${s}s`;
}

const count = (n: number) => n.toLocaleString('en-US');

const instant = (ms: number) => new Date(ms).toISOString();

/**
 * The mode line, then one line per chain: its range (newest first), where it is, what it did, and
 * whether it is done, being read (leased) or waiting for the next execution to read it.
 */
function chainLines(c: CheckpointView): string[] {
  // A status function deployed before chains sends none of this.
  if (!c.chains) return [];
  const n = c.chains.length;
  // The note is the plan's reason for its chain count, or the reason for the fallback.
  const head =
    c.mode === 'fallback'
      ? `fell back to one chain${c.note ? `: ${c.note}` : ''}`
      : c.mode
        ? `${n}, mode ${c.mode}${c.note ? ` (${c.note})` : ''}`
        : 'not planned yet (the first page plans them)';
  const lines = [`chains:     ${head}`];
  if (n === 0 || (n === 1 && c.mode !== 'chains' && c.mode !== 'fallback')) return lines;
  for (const chain of c.chains) {
    const range = `${chain.hi === null ? 'newest' : instant(chain.hi)} .. ${chain.lo === null ? 'oldest' : instant(chain.lo)}`;
    const state =
      chain.rangeDone || c.status === 'complete'
        ? 'done'
        : `${chain.leased ? 'reading' : 'waiting'}${chain.position !== null ? `, at ${instant(chain.position)}` : ''}`;
    lines.push(
      `  chain ${chain.chain}: ${range}, ${count(chain.pages)} pages, ${count(chain.inserted)} events, ${state}`,
    );
  }
  return lines;
}

/** The high-water mark, a running top-up's walk, and the last top-up with its new rows. */
function topUpLines(c: CheckpointView): string[] {
  const t = c.topUp;
  if (!t) return [];
  const lines: string[] = [];
  if (t.highWaterMark !== null) lines.push(`high-water: ${instant(t.highWaterMark)}`);
  if (t.signpost !== null) {
    lines.push(
      `top-up:     running, from ${instant(t.signpost)} down to ${t.floor === null ? 'the end' : instant(t.floor)}`,
    );
  }
  if (t.lastTopUpAtMs !== null) {
    const late =
      t.lateBeyondLookback > 0 ? `; ${count(t.lateBeyondLookback)} late beyond the lookback so far` : '';
    lines.push(
      `last top-up: ${instant(t.lastTopUpAtMs)}, ${count(t.lastTopUpInserted ?? 0)} new events (${count(t.topUps)} top-ups${late})`,
    );
  }
  return lines;
}

/** Human-readable lines for `status`. */
export function formatStatus(report: StatusReport): string[] {
  const lines = [`source:     ${report.sourceId}`];
  const e = report.execution;
  if (!e) {
    lines.push('execution:  none found for this source (start one with `npm run ingest -- start`)');
  } else {
    lines.push(`execution:  ${e.arn}`, `state:      ${e.status}`);
    if (e.startedAtMs !== null) lines.push(`started:    ${new Date(e.startedAtMs).toISOString()}`);
    if (e.stoppedAtMs !== null) lines.push(`stopped:    ${new Date(e.stoppedAtMs).toISOString()}`);
    if (e.error) lines.push(`error:      ${e.error}${e.cause ? `: ${e.cause}` : ''}`);
  }
  const c = report.checkpoint;
  if (c) {
    const of = c.totalReported !== null ? ` of ${count(c.totalReported)}` : '';
    const pct = c.totalReported ? ` (${((100 * c.eventsInserted) / c.totalReported).toFixed(1)}%)` : '';
    lines.push(`events:     ${count(c.eventsInserted)}${of}${pct}`, `pages:      ${count(c.pages)}`);
    lines.push(...chainLines(c));
    lines.push(...topUpLines(c));
    lines.push(`checkpoint: ${c.status}, updated ${new Date(c.updatedAtMs).toISOString()}`);
    if (c.conflicts) {
      lines.push(
        `conflicts:  ${count(c.conflicts)} ids sent again with other content (first copy kept; table event_conflicts)`,
      );
    }
    if (c.lastError) lines.push(`last error: ${c.lastError}`);
    const limit = c.lastRateLimit;
    if (limit || c.rateLimited) {
      const parts = [
        ...(limit
          ? [`${limit.remaining} of ${limit.limit} requests left, window resets in ${limit.resetSeconds}s`]
          : []),
        `${count(c.rateLimited ?? 0)} x 429 so far`,
        ...(c.nextRequestAtMs ? [`next request ${new Date(c.nextRequestAtMs).toISOString()}`] : []),
      ];
      lines.push(`rate limit: ${parts.join('; ')}`);
    }
  } else if (report.totals) {
    const asOf = report.totals.fromPlan
      ? ' when the chains were planned (--status-function gives the live count of each chain)'
      : '';
    lines.push(
      `events:     ${count(report.totals.inserted)}${asOf}`,
      `pages:      ${count(report.totals.pages)}`,
    );
  }
  if (report.eventsPerSecond !== null)
    lines.push(`rate:       ${count(Math.round(report.eventsPerSecond))} events/s`);
  if (report.etaSeconds !== null) lines.push(`eta:        ${duration(report.etaSeconds)}`);
  return lines;
}

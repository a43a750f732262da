import type { Checkpoint } from '#shared/step/index.ts';
import { byChain, sourceHeader, sourceTotals } from '#shared/step/totals.ts';

/** One cursor chain on the progress line. */
export interface ChainProgress {
  chain: number;
  pages: number;
  inserted: number;
  /** Nothing left in its range. */
  rangeDone: boolean;
}

/** Progress of one source, as shown by `npm run local` and `npm run localstack:start`. */
export interface ProgressSnapshot {
  stored: number;
  total: number | null;
  pages: number;
  rejected: number;
  rateLimited: number;
  elapsedMs: number;
  /** Events stored by this run (not counting earlier runs), for the rate. */
  storedThisRun: number;
  /**
   * Events per second the pacing plan allows (spacing and window). The ETA uses it until the run
   * has a minute of its own measurement: a rate measured over the first seconds is mostly start-up.
   */
  plannedRate?: number | null;
  /**
   * This run's measured progress, counted from the first page it was seen to store (start-up,
   * the embedded server and the plan excluded): the ETA's rate as soon as it spans MEASURE_MS.
   */
  sinceFirstPage?: { ms: number; stored: number } | null;
  /** The source's cursor chains (the counters above are their sums); shown when there are several. */
  chains?: readonly ChainProgress[];
  /** How the source is read: a fallback to one chain is shown. */
  mode?: Checkpoint['chainMode'];
}

/** Past this many chains the line shows a summary instead of one entry per chain. */
export const CHAINS_LISTED = 4;

/**
 * The source's counters and chains from its checkpoint rows (the source's own row and its chain
 * rows, as `listChains` reads them): the part of a snapshot the database knows. The caller adds
 * the total, the elapsed time, this run's count and the planned rate.
 */
export function progressFromRows(
  rows: readonly Checkpoint[],
): Pick<ProgressSnapshot, 'stored' | 'pages' | 'rejected' | 'rateLimited' | 'chains' | 'mode'> {
  const totals = sourceTotals(rows);
  return {
    stored: totals.inserted,
    pages: totals.pages,
    rejected: totals.rejected,
    rateLimited: totals.rateLimited,
    chains: byChain(rows).map((r) => ({
      chain: r.chain,
      pages: r.pages,
      inserted: r.eventsInserted,
      rangeDone: r.rangeDone,
    })),
    mode: sourceHeader(rows)?.chainMode ?? null,
  };
}

/**
 * The chains in a few characters, or null when there is one chain to speak of:
 * `chains 3 (0: 120 p, 1: 98 p, 2: done)`; past four, `chains 8 (5 open: 98-131 p, 3 done)`.
 */
export function describeChains(
  chains: readonly ChainProgress[] | undefined,
  mode?: ProgressSnapshot['mode'],
): string | null {
  if (mode === 'fallback') return 'fallback to 1 chain';
  if (!chains || chains.length < 2) return null;
  if (chains.length <= CHAINS_LISTED) {
    const each = chains.map((c) => `${c.chain}: ${c.rangeDone ? 'done' : `${c.pages} p`}`);
    return `chains ${chains.length} (${each.join(', ')})`;
  }
  const open = chains.filter((c) => !c.rangeDone).map((c) => c.pages);
  const done = chains.length - open.length;
  if (open.length === 0) return `chains ${chains.length} (all done)`;
  const lo = Math.min(...open);
  const hi = Math.max(...open);
  const pages = lo === hi ? `${lo} p` : `${lo}-${hi} p`;
  return `chains ${chains.length} (${open.length} open: ${pages}${done > 0 ? `, ${done} done` : ''})`;
}

/**
 * How long a measurement must span before the ETA takes it over the plan: a few pages, so that
 * the first pages of several chains, stored together, do not read as the pace.
 */
export const MEASURE_MS = 3000;

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '--:--';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, '0')}m`
    : `${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`;
}

export function describeProgress(p: ProgressSnapshot, width = 24): { bar: string; line: string } {
  const since = p.sinceFirstPage;
  const measured =
    since && since.ms >= MEASURE_MS && since.stored > 0 ? (since.stored * 1000) / since.ms : null;
  const rate = measured ?? (p.elapsedMs > 0 ? (p.storedThisRun * 1000) / p.elapsedMs : 0);
  const fraction = p.total ? Math.min(1, p.stored / p.total) : 0;
  const filled = Math.round(fraction * width);
  const remaining = p.total ? Math.max(0, p.total - p.stored) : null;
  // Measured progress as soon as there is any; until then the plan (the cold rate since the start
  // is mostly start-up: it said 37 minutes for a 22-minute run).
  const etaRate = measured ?? p.plannedRate ?? rate;
  const eta = remaining !== null && etaRate > 0 ? formatDuration((remaining / etaRate) * 1000) : '--:--';
  const pct = p.total ? `${(fraction * 100).toFixed(1).padStart(5)}%` : '    ?%';
  const of = p.total ? `/${p.total.toLocaleString('en-US')}` : '';
  const chains = describeChains(p.chains, p.mode);
  const stats =
    `${p.stored.toLocaleString('en-US')}${of} events, ${p.pages} page${p.pages === 1 ? '' : 's'}, ${chains ? `${chains}, ` : ''}${Math.round(rate).toLocaleString('en-US')} ev/s, ` +
    `${p.rateLimited} x 429, ${p.rejected} rejects, elapsed ${formatDuration(p.elapsedMs)}, ETA ${eta}`;
  return {
    bar: `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct} ${stats}`,
    line: `progress: ${pct.trim()} ${stats}`,
  };
}

/** A live bar on a terminal; plain periodic lines elsewhere (logs, CI, pipes). */
export function createProgressReporter(opts: {
  mode: 'tty' | 'lines' | 'none';
  write: (text: string) => void;
  lineIntervalMs?: number;
}) {
  let lastLineAt = 0;
  let drawn = false;
  return {
    update(p: ProgressSnapshot, now = Date.now()) {
      if (opts.mode === 'none') return;
      const d = describeProgress(p);
      if (opts.mode === 'tty') {
        opts.write(`\r\x1b[2K${d.bar}`);
        drawn = true;
      } else if (now - lastLineAt >= (opts.lineIntervalMs ?? 10_000)) {
        lastLineAt = now;
        opts.write(`${d.line}\n`);
      }
    },
    /**
     * The last state, always shown (a line is otherwise written every 10 s at most), then the
     * bar's line is ended so that what follows starts on a fresh one.
     */
    done(p?: ProgressSnapshot) {
      if (p && opts.mode === 'lines') opts.write(`${describeProgress(p).line}\n`);
      else if (p && opts.mode === 'tty') opts.write(`\r\x1b[2K${describeProgress(p).bar}`);
      if (opts.mode === 'tty' && (drawn || p)) opts.write('\n');
      drawn = false;
    },
  };
}

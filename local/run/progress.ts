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
}

/** How long the ETA trusts the plan over the measured rate. */
export const PLANNED_RATE_MS = 60_000;

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
  const rate = p.elapsedMs > 0 ? (p.storedThisRun * 1000) / p.elapsedMs : 0;
  const fraction = p.total ? Math.min(1, p.stored / p.total) : 0;
  const filled = Math.round(fraction * width);
  const remaining = p.total ? Math.max(0, p.total - p.stored) : null;
  const etaRate = p.plannedRate && p.elapsedMs < PLANNED_RATE_MS ? p.plannedRate : rate;
  const eta = remaining !== null && etaRate > 0 ? formatDuration((remaining / etaRate) * 1000) : '--:--';
  const pct = p.total ? `${(fraction * 100).toFixed(1).padStart(5)}%` : '    ?%';
  const of = p.total ? `/${p.total.toLocaleString('en-US')}` : '';
  const stats =
    `${p.stored.toLocaleString('en-US')}${of} events, ${p.pages} pages, ${Math.round(rate).toLocaleString('en-US')} ev/s, ` +
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

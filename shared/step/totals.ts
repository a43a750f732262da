import type { Checkpoint } from './contract.ts';

/*
 * A source read by several cursor chains has one checkpoint row per chain: its own row (chain 0,
 * also the source's header) and `<sourceId>~<j>` for chain j. Every counter lives on the row of
 * the chain that did the work, so whatever speaks for the source (status, progress,
 * verification, summaries) sums the rows. Pure: the views are tested on plain rows.
 */

/** The counters of a source: the sum over its rows. */
export interface SourceTotals {
  pages: number;
  eventsInserted: number;
  duplicatesSkipped: number;
  rejected: number;
  requests: number;
  rateLimited: number;
}

type Counters = Pick<Checkpoint, keyof SourceTotals>;

export function sourceTotals(rows: readonly Counters[]): SourceTotals {
  const totals: SourceTotals = {
    pages: 0,
    eventsInserted: 0,
    duplicatesSkipped: 0,
    rejected: 0,
    requests: 0,
    rateLimited: 0,
  };
  for (const r of rows) {
    totals.pages += r.pages;
    totals.eventsInserted += r.eventsInserted;
    totals.duplicatesSkipped += r.duplicatesSkipped;
    totals.rejected += r.rejected;
    totals.requests += r.requests;
    totals.rateLimited += r.rateLimited;
  }
  return totals;
}

/**
 * The source's own row (the header: status, lease, plan), or null when the rows hold none. It is
 * the row that is not a chain of another; a row list from `listChains` starts with it.
 */
export function sourceHeader<T extends Pick<Checkpoint, 'chainOf'>>(rows: readonly T[]): T | null {
  return rows.find((r) => r.chainOf === null) ?? null;
}

/** The rows in chain order (the source's row first). */
export function byChain<T extends Pick<Checkpoint, 'chain' | 'chainOf'>>(rows: readonly T[]): T[] {
  return [...rows].sort((a, b) => rank(a) - rank(b));
}

function rank(r: Pick<Checkpoint, 'chain' | 'chainOf'>): number {
  return r.chainOf === null ? -1 : r.chain;
}

import type { Checkpoint, StepTotals, Totals } from './contract.ts';

/*
 * A source read by several cursor chains has one checkpoint row per chain: its own row (chain 0,
 * also the source's header) and `<sourceId>~<j>` for chain j. Every counter lives on the row of
 * the chain that did the work, so whatever speaks for the source (status, progress,
 * verification, summaries) sums the rows. Pure: the views are tested on plain rows.
 */

type Counters = Pick<
  Checkpoint,
  'pages' | 'eventsInserted' | 'duplicatesSkipped' | 'rejected' | 'requests' | 'rateLimited'
>;

/** One row's counters (the checkpoint's columns) as totals. */
export function totalsOf(row: Counters): Totals {
  return {
    pages: row.pages,
    inserted: row.eventsInserted,
    duplicates: row.duplicatesSkipped,
    rejected: row.rejected,
    requests: row.requests,
    rateLimited: row.rateLimited,
  };
}

/** The counters of a source: the sum over its rows. */
export function sourceTotals(rows: readonly Counters[]): Totals {
  const totals: Totals = { pages: 0, inserted: 0, duplicates: 0, rejected: 0, requests: 0, rateLimited: 0 };
  for (const r of rows) {
    const t = totalsOf(r);
    for (const key of Object.keys(totals) as (keyof Totals)[]) totals[key] += t[key];
  }
  return totals;
}

/** The step's share of totals. */
export function stepTotals(t: Totals): StepTotals {
  return { pages: t.pages, inserted: t.inserted, duplicates: t.duplicates, rejected: t.rejected };
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

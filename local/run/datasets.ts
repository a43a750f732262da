import { eq } from 'drizzle-orm';
import type { Checkpoint } from '#shared/db/checkpoints.ts';
import type { Db } from '#shared/db/client.ts';
import { sourceDatasets } from '#shared/db/schema.ts';
import { sourceHeader, sourceTotals } from '#shared/step/totals.ts';
import type { Dataset } from '../simulator/index.ts';
import type { LocalRunOptions } from './options.ts';

/*
 * What a source was ingested from, and the refusal of a run that asks for something else. A
 * local run never starts a stored source over by itself: that takes --reset.
 */

/** Raised when the run's options describe another upstream than the stored source's: exit 2. */
export class SourceMismatchError extends Error {
  override readonly name = 'SourceMismatchError';
}

export interface Upstream {
  /** Compared as text: what makes two runs the same data. */
  key: string;
  /** For people: what the refusal prints. */
  description: string;
}

const n = (v: number) => v.toLocaleString('en-US');

/**
 * The data a run reads: for the simulator its data set (events, seed, chaos; the pace options
 * change when rows come, not which), for a real API its base URL without credentials.
 */
export function upstreamOf(
  o: Pick<LocalRunOptions, 'apiUrl' | 'events' | 'seed' | 'chaos'>,
  apiUrl: string | null = o.apiUrl,
): Upstream {
  if (apiUrl) {
    const u = new URL(apiUrl);
    u.username = '';
    u.password = '';
    u.search = '';
    const base = u.toString().replace(/\/$/, '');
    return { key: `api ${base}`, description: `the DataSync API at ${base}` };
  }
  return {
    key: `simulator events=${o.events} seed=${o.seed} chaos=${o.chaos}`,
    description: `the simulator's ${n(o.events)}-event data set (--events ${o.events}${o.seed !== 1 ? ` --seed ${o.seed}` : ''}${o.chaos ? ' --chaos' : ''})`,
  };
}

export async function storedUpstream(db: Db, sourceId: string): Promise<Upstream | null> {
  const [row] = await db
    .select({ key: sourceDatasets.upstream, description: sourceDatasets.description })
    .from(sourceDatasets)
    .where(eq(sourceDatasets.sourceId, sourceId));
  return row ?? null;
}

/** Records what the source is read from (replacing the record of a source that was emptied). */
export async function recordUpstream(db: Db, sourceId: string, upstream: Upstream): Promise<void> {
  await db
    .insert(sourceDatasets)
    .values({ sourceId, upstream: upstream.key, description: upstream.description })
    .onConflictDoUpdate({
      target: sourceDatasets.sourceId,
      set: { upstream: upstream.key, description: upstream.description, createdAt: new Date() },
    });
}

export async function forgetUpstream(db: Db, sourceId: string): Promise<void> {
  await db.delete(sourceDatasets).where(eq(sourceDatasets.sourceId, sourceId));
}

/**
 * Checks the run against what is stored for the source, and records the upstream of a source
 * that has none yet. A run that asks for another data set than the stored one is refused with
 * what is stored, what was asked and the two ways on: --reset (start it over) or --source NAME
 * (keep both). A source with a checkpoint but no record (started before records, or by the
 * deployed pipeline) is compared by what its checkpoint says of the upstream.
 */
export async function checkSourceUpstream(
  db: Db,
  sourceId: string,
  rows: Checkpoint[],
  asked: Upstream,
  dataset: Dataset | null,
  /** A source name to offer for keeping both. */
  otherSource: string,
): Promise<void> {
  const header = sourceHeader(rows);
  const stored = await storedUpstream(db, sourceId);
  if (!header) {
    await recordUpstream(db, sourceId, asked);
    return;
  }
  let storedDescription: string | null = null;
  if (stored) {
    if (stored.key !== asked.key) storedDescription = stored.description;
  } else if (dataset) {
    storedDescription = otherDataSet(header, rows, dataset);
  }
  if (storedDescription === null) {
    if (!stored) await recordUpstream(db, sourceId, asked);
    return;
  }
  const t = sourceTotals(rows);
  const state = header.status === 'complete' ? 'complete' : `${header.status}, resumable`;
  throw new SourceMismatchError(
    `source "${sourceId}" holds ${n(t.inserted)} events of ${storedDescription} (${state}); this run asks for ` +
      `${asked.description}. Nothing was changed. To keep both, add --source ${otherSource} (any new name); to delete ` +
      `the stored events of "${sourceId}" and start it over with these options, add --reset.`,
  );
}

/**
 * Without a record: a description of the data set the checkpoint was built from when it is
 * not the simulator's current one, else null. The upstream's reported total and, for a complete
 * source, the count of valid events tell them apart.
 */
function otherDataSet(cp: Checkpoint, rows: Checkpoint[], dataset: Dataset): string | null {
  // A data set that grew since (growth the data dir keeps, simulator-growth/) is the same one, larger.
  const base = dataset.total - dataset.grown;
  if (cp.totalReported !== null && (cp.totalReported < base || cp.totalReported > dataset.total)) {
    return `a ${n(cp.totalReported)}-event data set`;
  }
  const inserted = sourceTotals(rows).inserted;
  const valid = dataset.expectedValidCount();
  if (cp.status === 'complete' && (inserted > valid || inserted < valid - dataset.grown)) {
    return 'another data set (its valid-event count differs from this one)';
  }
  return null;
}

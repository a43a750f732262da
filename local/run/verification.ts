import type { Sql } from 'postgres';
import type { Checkpoint } from '#shared/db/checkpoints.ts';
import { sourceHeader, sourceTotals } from '#shared/step/totals.ts';

export interface StoredCounts {
  events: number;
  distinctIds: number;
  rejectedRows: number;
}

/**
 * What the tables hold for a source, counted independently of the checkpoint's own counters.
 * (shared/db has no function for these counts: the pipeline itself never needs them.)
 */
export async function countStored(sql: Sql, sourceId: string): Promise<StoredCounts> {
  const [row] = await sql<{ events: number; distinctIds: number }[]>`
    select count(*)::int as "events", count(distinct id)::int as "distinctIds" from events where source_id = ${sourceId}`;
  const [rej] = await sql<{ rejected: number }[]>`
    select count(*)::int as "rejected" from rejected_events where source_id = ${sourceId}`;
  return { events: row?.events ?? 0, distinctIds: row?.distinctIds ?? 0, rejectedRows: rej?.rejected ?? 0 };
}

/**
 * Whether the stored rows still match the checkpoint (no id twice, every count equal), else
 * what differs: a source whose rows were deleted or changed outside the pipeline.
 */
export function storedRowsProblem(
  counts: StoredCounts,
  checkpoints: Checkpoint | readonly Checkpoint[] | null,
): string | null {
  const rows = checkpoints === null ? [] : 'sourceId' in checkpoints ? [checkpoints] : checkpoints;
  const header = sourceHeader(rows);
  if (!header) return 'the source has no checkpoint';
  const stranger = rows.find((r) => r !== header && r.chainOf !== header.sourceId);
  if (stranger) return `the checkpoint ${stranger.sourceId} is not a chain of ${header.sourceId}`;
  const totals = sourceTotals(rows);
  const of = rows.length > 1 ? `the checkpoints of its ${rows.length} chains count` : 'the checkpoint counts';
  if (counts.events !== counts.distinctIds) {
    return `${counts.events - counts.distinctIds} event ids are stored more than once`;
  }
  if (counts.events !== totals.inserted) {
    return `${counts.events} events are stored and ${of} ${totals.inserted}`;
  }
  if (counts.rejectedRows !== totals.rejected) {
    return `${counts.rejectedRows} rejected rows are stored and ${of} ${totals.rejected}`;
  }
  return null;
}

/**
 * Why a complete source does not verify, or null when it does: every row once, the tables agree
 * with the checkpoint, and (when known) with what the upstream holds.
 *
 * `checkpoints` are the source's rows (its own and its chain rows, as `listChains` reads them):
 * the stored events are counted against the SUM of the rows' counters. Per chain the counts are
 * not checkable (rows at a boundary's instant may reach two chains and the primary key keeps the
 * first), the sum is. A single checkpoint is accepted for a source read by one chain only.
 */
export function verificationProblem(
  counts: StoredCounts,
  checkpoints: Checkpoint | readonly Checkpoint[] | null,
  expectedEvents: number | null,
): string | null {
  const stored = storedRowsProblem(counts, checkpoints);
  if (stored !== null) return stored;
  const rows = checkpoints === null ? [] : 'sourceId' in checkpoints ? [checkpoints] : checkpoints;
  // The upstream contradicted itself: the stored copy of those ids may be the wrong one.
  const conflicts = conflictsOf(rows);
  if (conflicts > 0) {
    return (
      `${conflicts} conflicting duplicate${conflicts === 1 ? '' : 's'}: event ids sent again with other content ` +
      '(the first copy is stored; each other copy and the fields that differ are in table event_conflicts)'
    );
  }
  if (expectedEvents !== null && counts.events !== expectedEvents) {
    return `${counts.events} events are stored and the upstream holds ${expectedEvents} valid ones`;
  }
  return null;
}

/** Conflicting duplicates met by a source's rows (table event_conflicts, counted on each checkpoint row). */
export function conflictsOf(rows: readonly Pick<Checkpoint, 'conflicts'>[]): number {
  return rows.reduce((sum, r) => sum + (r.conflicts ?? 0), 0);
}

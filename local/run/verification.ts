import type { Sql } from 'postgres';
import type { Checkpoint } from '#shared/db/checkpoints.ts';

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
 * Why a complete source does not verify, or null when it does: every row once, the tables agree
 * with the checkpoint, and (when known) with what the upstream holds.
 */
export function verificationProblem(
  counts: StoredCounts,
  cp: Checkpoint | null,
  expectedEvents: number | null,
): string | null {
  if (!cp) return 'the source has no checkpoint';
  if (counts.events !== counts.distinctIds) {
    return `${counts.events - counts.distinctIds} event ids are stored more than once`;
  }
  if (counts.events !== cp.eventsInserted) {
    return `${counts.events} events are stored and the checkpoint counts ${cp.eventsInserted}`;
  }
  if (counts.rejectedRows !== cp.rejected) {
    return `${counts.rejectedRows} rejected rows are stored and the checkpoint counts ${cp.rejected}`;
  }
  if (expectedEvents !== null && counts.events !== expectedEvents) {
    return `${counts.events} events are stored and the upstream holds ${expectedEvents} valid ones`;
  }
  return null;
}

import { getCheckpoint } from '#shared/db/checkpoints.ts';
import type { DbLike } from '#shared/db/client.ts';
import type { Checkpoint } from '#shared/step.ts';

/**
 * A source's checkpoint rows: its own row, then its chain rows by chain.
 *
 * Stand-in until the db branch's `listChains` (shared/db/chains.ts) is merged: at merge this
 * becomes `export { listChains as readSourceRows } from '#shared/db/chains.ts'`. Until then it
 * reads the source's own row only, which is all a source has before chains exist.
 */
export async function readSourceRows(db: DbLike, sourceId: string): Promise<Checkpoint[]> {
  const row = await getCheckpoint(db, sourceId);
  return row ? [row] : [];
}

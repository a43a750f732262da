/*
 * Naming of a source's cursor chains. Pure: the step, the state machine's callers and the
 * database layer all agree on these keys without importing the database.
 *
 * Chain 0 is the source's own checkpoint row; chain j >= 1 is the row `<sourceId>~<j>`. `~` is
 * outside the sourceId alphabet (contract.ts sourceIdSchema), so a chain key never collides with
 * a source id.
 */

/** The id of a chain's built start cursor: the service positions by ts (and maybe id), and this id sorts first. */
export const ZERO_ID = '00000000-0000-0000-0000-000000000000';

const SEPARATOR = '~';

/** The checkpoint key of chain `chain` of `sourceId`. */
export function chainKey(sourceId: string, chain: number): string {
  if (!Number.isInteger(chain) || chain < 0) {
    throw new RangeError(`chain must be an integer >= 0, got ${chain}`);
  }
  return chain === 0 ? sourceId : `${sourceId}${SEPARATOR}${chain}`;
}

/**
 * The source and chain a checkpoint key names; null when the key is not one chainKey makes
 * (`a~0`, `a~01`, `a~x`, `~1`).
 */
export function parseChainKey(key: string): { sourceId: string; chain: number } | null {
  const at = key.lastIndexOf(SEPARATOR);
  if (at === -1) return key.length > 0 ? { sourceId: key, chain: 0 } : null;
  const sourceId = key.slice(0, at);
  const digits = key.slice(at + 1);
  if (sourceId.length === 0 || sourceId.includes(SEPARATOR) || !/^[1-9][0-9]*$/.test(digits)) return null;
  const chain = Number(digits);
  return Number.isSafeInteger(chain) ? { sourceId, chain } : null;
}

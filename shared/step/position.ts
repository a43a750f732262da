import { UpstreamProtocolError } from '../errors.ts';
import { escapeText } from '../upstream/escape.ts';
import type { EventsPage } from '../upstream/types.ts';
import { ZERO_ID } from './chains.ts';
import type { Checkpoint } from './contract.ts';

/*
 * A newest-first stream must move strictly down. The position is the pair (timestamp, id) in
 * (timestamp desc, id desc) order, the order the service pages in. A page whose nextCursor points
 * back (a newer instant than the request's position) or sideways (the same instant and an id that
 * is not below it) would be followed forever, so
 * the step stops the source with an UpstreamProtocolError that names the positions, stores
 * nothing of that page, and resumes from the stored position when started again.
 *
 * An empty page with hasMore and a new cursor moves the position on without a row: a few in a row
 * may be legitimate, an endless run of them is a loop the position check cannot see. They are
 * counted in the checkpoint (empty_pages_in_a_row, reset by any page with a row), so a resume keeps
 * counting, and the MAX_EMPTY_PAGES_IN_A_ROW-th one stops the source the same way.
 */

/** Empty pages with hasMore in a row the step follows; the next one stops the source. */
export const MAX_EMPTY_PAGES_IN_A_ROW = 3;

type Position = { ts: number | null; id: string | null };

/** Where the page came from and where its cursor leads, as an operator reads it. */
function describe(p: Position): string {
  if (p.ts === null) return 'page one';
  return `(ts=${p.ts} ${new Date(p.ts).toISOString()}, id=${p.id === null ? null : escapeText(p.id, 60)})`;
}

/**
 * Checks the move from the request's position (the checkpoint's) to the page's cursor `next`.
 * Returns whether the page counts as an empty page in a row; throws UpstreamProtocolError when
 * the stream does not move strictly down. Call it only for a page with hasMore (the last page
 * ends the stream wherever it is).
 */
export function checkStreamPosition(
  cp: Checkpoint,
  page: Pick<EventsPage, 'data' | 'hasMore'>,
  next: Position,
  sourceId: string,
): { emptyPage: boolean } {
  if (!page.hasMore || next.ts === null) return { emptyPage: false };
  const from: Position = { ts: cp.positionTs, id: cp.positionId };
  const stop = (what: string) =>
    new UpstreamProtocolError(
      `Source "${sourceId}": the upstream's nextCursor ${what}; following it would read the same rows again, maybe forever. ` +
        `Request position ${describe(from)}, the page's cursor ${describe(next)}. Nothing of this page was stored and the ` +
        'checkpoint still points at the request position: start the execution again to resume from it once the upstream ' +
        'pages correctly, and report it to the API provider if it persists.',
    );
  if (from.ts !== null) {
    if (next.ts > from.ts) {
      throw stop('points back, to a newer instant than the position it was requested from');
    }
    // At one instant the order is by id, descending; a chain's start (the zero id) is above every id.
    if (
      next.ts === from.ts &&
      from.id !== ZERO_ID &&
      from.id !== null &&
      next.id !== null &&
      next.id >= from.id
    ) {
      throw stop(
        'points sideways, to the same instant as the position it was requested from and an id not below it',
      );
    }
  }
  const emptyPage = page.data.length === 0;
  if (emptyPage) {
    const inARow = (cp.emptyPagesInARow ?? 0) + 1;
    if (inARow >= MAX_EMPTY_PAGES_IN_A_ROW) {
      throw stop(
        `came with empty page number ${inARow} in a row that says hasMore (at most ${MAX_EMPTY_PAGES_IN_A_ROW - 1} are followed, MAX_EMPTY_PAGES_IN_A_ROW)`,
      );
    }
  }
  return { emptyPage };
}

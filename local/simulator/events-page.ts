import { decodeCursor, encodeCursor } from '#shared/cursor.ts';
import type { Cursors } from './cursor-position.ts';
import type { Dataset } from './dataset.ts';
import type { RateDecision } from './rate-limiter.ts';
import type { RequestFaults } from './request-faults.ts';
import { errorReply, type Reply } from './responses.ts';
import type { SimStats } from './stats.ts';

/** GET /api/v1/events: the limit, the cursor, the rows and the body around them. */

export const MAX_PAGE_SIZE = 5000;
export const DEFAULT_PAGE_SIZE = 100;

export interface EventsPageParts {
  dataset: Dataset;
  cursors: Cursors;
  faults: RequestFaults;
  stats: SimStats;
  /** The `pagination.cursorExpiresIn` figure, in the client's seconds. */
  cursorExpiresIn: number;
}

/** The limit the page is served with, or the 400 reply for a value that is not a positive integer. */
function parseLimit(param: string | null, requestId: string, rate: RateDecision | null): number | Reply {
  if (param === null) return DEFAULT_PAGE_SIZE;
  const n = /^\d+$/.test(param.trim()) ? Number(param.trim()) : Number.NaN;
  if (!(n >= 1)) {
    return errorReply(
      400,
      requestId,
      rate,
      'Bad Request',
      `Invalid limit '${param}': pass a positive integer (at most ${MAX_PAGE_SIZE}; larger values are capped)`,
      'INVALID_LIMIT',
    );
  }
  return Math.min(MAX_PAGE_SIZE, n);
}

/** A reply with the number of rows it carries (0 for an error), which its latency depends on. */
export type PageReply = Reply & { rows: number };

/** The id a sideways cursor carries: above every id, at the request's own instant. */
const SIDEWAYS_ID = 'ffffffff-ffff-4fff-bfff-ffffffffffff';
const DAY_MS = 86_400_000;

/** The id just below `id` in string order (its last 12 hex digits minus one): the next empty page's cursor. */
function idBelow(id: string): string {
  const head = id.slice(0, 24);
  const tail = BigInt(`0x${id.slice(24)}`);
  return `${head}${(tail === 0n ? 0n : tail - 1n).toString(16).padStart(12, '0')}`;
}

export function createEventsPage({ dataset, cursors, faults, stats, cursorExpiresIn }: EventsPageParts) {
  /** Cursors of the empty-page fault, by `ts:id`: each still leads to the position that answers empty. */
  const emptyCursors = new Map<string, number>();

  /** Event `index` as served, altered: the same id with other content. */
  function altered(index: number, change: (e: Record<string, unknown>) => void): string {
    const e = JSON.parse(dataset.serialiseEvent(index)) as Record<string, unknown>;
    change(e);
    return JSON.stringify(e);
  }

  function emptyCursorOf(param: string): { start: number; ts: number; id: string } | null {
    if (emptyCursors.size === 0) return null;
    try {
      const c = decodeCursor(param);
      const start = emptyCursors.get(`${c.ts}:${c.id}`);
      return start === undefined ? null : { start, ts: c.ts, id: c.id };
    } catch {
      return null;
    }
  }

  return function eventsPage(url: URL, now: number, requestId: string, rate: RateDecision | null): PageReply {
    const limit = parseLimit(url.searchParams.get('limit'), requestId, rate);
    if (typeof limit !== 'number') return { ...limit, rows: 0 };

    let start = 0;
    const cursorParam = url.searchParams.get('cursor');
    let emptyFrom: { ts: number; id: string } | null = null;
    if (cursorParam) {
      const virtual = emptyCursorOf(cursorParam);
      if (virtual) {
        start = virtual.start;
        emptyFrom = virtual;
      } else {
        const resolved = cursors.resolve(cursorParam, now, requestId, rate);
        if (typeof resolved !== 'number') return { ...resolved, rows: 0 };
        start = resolved;
      }
    }

    const cursorFault = start < dataset.total ? faults.cursorFault(start) : null;
    if (cursorFault === 'empty') {
      // An empty page that says there is more, with a new cursor just below the request's
      // position: strictly down, never a row, forever.
      const from = emptyFrom ?? { ts: dataset.timestampAt(start - 1), id: dataset.idAt(start - 1) };
      const issued = decodeCursor(cursors.issue(start - 1, now));
      const next = { ts: from.ts, id: idBelow(from.id) };
      emptyCursors.set(`${next.ts}:${next.id}`, start);
      stats.faults.emptyPage++;
      stats.pages++;
      const cursor = encodeCursor({ ...issued, ts: next.ts, id: next.id });
      const body = `{"data":[],"pagination":{"limit":${limit},"hasMore":true,"nextCursor":"${cursor}","cursorExpiresIn":${cursorExpiresIn}},"meta":{"total":${dataset.total},"returned":0,"requestId":"${requestId}"}}`;
      return { status: 200, requestId, rate, body, cache: 'MISS', rows: 0 };
    }

    const duplicates = faults.duplicateRows(start);
    if (duplicates > 0) {
      stats.faults.duplicatePages++;
      stats.faults.duplicateRows += duplicates;
    }
    const from = start - duplicates;
    const end = Math.min(dataset.total, from + limit);
    const range = dataset.serialiseRange(from, end);
    let json = range.json;
    for (const [kind, n] of Object.entries(range.faults)) {
      stats.faults[kind as keyof typeof range.faults] += n ?? 0;
    }
    if (faults.conflictingDuplicate(start) && from < end) {
      // The previous page's last row again, renamed (across pages), and this page's first row
      // again at its end, a day older (within the page): same ids, other content.
      const across = altered(start - 1, (e) => {
        e.name = 'event_zzzzzz';
      });
      const within = altered(from, (e) => {
        e.timestamp = dataset.timestampAt(from) - DAY_MS;
      });
      json = `${across},${json},${within}`;
      stats.faults.conflictingDuplicate += 2;
    }
    const hasMore = end < dataset.total;
    let nextCursor = hasMore ? `"${cursors.issue(end - 1, now)}"` : 'null';
    if (hasMore && cursorFault === 'back') {
      // Back to the cursor that led to the previous page: pages repeat forever.
      nextCursor = `"${cursors.issue(Math.max(0, start - 1 - limit), now)}"`;
      stats.faults.backCursor++;
    } else if (hasMore && cursorFault === 'sideways') {
      const issued = decodeCursor(cursors.issue(start - 1, now));
      nextCursor = `"${encodeCursor({ ...issued, id: SIDEWAYS_ID })}"`;
      stats.faults.sidewaysCursor++;
    }
    stats.pages++;
    stats.eventsServed += end - from;
    const body = `{"data":[${json}],"pagination":{"limit":${limit},"hasMore":${hasMore},"nextCursor":${nextCursor},"cursorExpiresIn":${cursorExpiresIn}},"meta":{"total":${dataset.total},"returned":${end - from},"requestId":"${requestId}"}}`;
    return { status: 200, requestId, rate, body, cache: 'MISS', rows: end - from };
  };
}

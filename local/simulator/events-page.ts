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

export function createEventsPage({ dataset, cursors, faults, stats, cursorExpiresIn }: EventsPageParts) {
  return function eventsPage(url: URL, now: number, requestId: string, rate: RateDecision | null): PageReply {
    const limit = parseLimit(url.searchParams.get('limit'), requestId, rate);
    if (typeof limit !== 'number') return { ...limit, rows: 0 };

    let start = 0;
    const cursorParam = url.searchParams.get('cursor');
    if (cursorParam) {
      const resolved = cursors.resolve(cursorParam, now, requestId, rate);
      if (typeof resolved !== 'number') return { ...resolved, rows: 0 };
      start = resolved;
    }

    const duplicates = faults.duplicateRows(start);
    if (duplicates > 0) {
      stats.faults.duplicatePages++;
      stats.faults.duplicateRows += duplicates;
    }
    const from = start - duplicates;
    const end = Math.min(dataset.total, from + limit);
    const { json, faults: served } = dataset.serialiseRange(from, end);
    for (const [kind, n] of Object.entries(served)) {
      stats.faults[kind as keyof typeof served] += n ?? 0;
    }
    const hasMore = end < dataset.total;
    const nextCursor = hasMore ? `"${cursors.issue(end - 1, now)}"` : 'null';
    stats.pages++;
    stats.eventsServed += end - from;
    const body = `{"data":[${json}],"pagination":{"limit":${limit},"hasMore":${hasMore},"nextCursor":${nextCursor},"cursorExpiresIn":${cursorExpiresIn}},"meta":{"total":${dataset.total},"returned":${end - from},"requestId":"${requestId}"}}`;
    return { status: 200, requestId, rate, body, cache: 'MISS', rows: end - from };
  };
}

import { decodeCursor } from '../cursor.ts';
import { InvocationDeadlineError, UpstreamProtocolError } from '../errors.ts';
import { planNextRequest } from '../pacing/headers.ts';
import { RequestPacer } from '../pacing/request-pacer.ts';
import { normalisePage } from '../upstream/normalise.ts';
import type { FetchPageResult, NormalisedEvent } from '../upstream/types.ts';
import { chainsWanted } from './chains.ts';
import type { ChainMode, Checkpoint, PlannedRange, StepDeps, TopUpStorePort } from './contract.ts';
import { fetchWithRecovery } from './recovery.ts';

/*
 * The top-up: a complete source started again (a new execution; the same `npm run local`) reads
 * what arrived since. The upstream is newest first, so the walk goes from page one down to the
 * high-water mark less a lookback (the floor), the way Airbyte's `is_data_feed` and dlt's
 * `row_order="desc"` do, with two differences that make it exactly once and resumable:
 *
 * - The marks live in the checkpoint row, beside the walk's position. The Plan task reads page
 *   one, records the signpost (page one's newest position) and the floor in one transaction
 *   (beginTopUp), then stores page one as chain 0's first page like any page (rows and position
 *   in one commit). The mark moves to the signpost only in the commit that ends the last range
 *   (finishRange), so a walk killed anywhere resumes from its last committed page with the old
 *   mark, and a finished one never walks again.
 * - The walk's ranges are the backfill's ranges: chain 0 from page one down to its low end, the
 *   other chains from a cursor built at their top; the range that ends at the floor ends the
 *   walk. A large gap (many pages) is split into chains like a backfill, by the same rules.
 *
 * The page that crosses the floor is stored whole (rows at the floor's instant and the mark's,
 * ties included, are read; the primary key stores each once). Rows below the floor that were
 * not stored before are late beyond the lookback: stored, counted (`lateBeyondLookback`), and
 * the walk goes on one page further for as long as the pages below the floor bring such rows.
 */

/** true for a row of a running top-up's walk: its range's end is checked against the floor. */
export function inTopUpWalk(cp: Checkpoint): boolean {
  return (cp.marks?.floorTs ?? null) !== null;
}

/**
 * What a page of the walk says about the floor: whether the chain's range ends at the floor and
 * this page reached below it, and how many of its rows below the floor the source had not stored
 * (counted, and they keep the walk going). Rows are not written here: the page's commit does.
 */
export async function atFloor(
  deps: StepDeps,
  cp: Checkpoint,
  events: NormalisedEvent[],
  sourceId: string,
): Promise<{ reachedFloor: boolean; lateBeyondLookback: number }> {
  const floor = cp.marks?.floorTs ?? null;
  const lo = cp.rangeLoTs;
  const none = { reachedFloor: false, lateBeyondLookback: 0 };
  if (floor === null || lo === null || lo > floor) return none;
  const below = [...new Set(events.filter((e) => e.occurredAtMs < floor).map((e) => e.id))];
  if (below.length === 0) return none;
  const stored = (await deps.store.topUp?.storedIds({ sourceId, ids: below })) ?? new Set<string>();
  return { reachedFloor: true, lateBeyondLookback: below.filter((id) => !stored.has(id)).length };
}

/** The range ends with this page: it reached its low end (a floor range: with no late rows below it) or the data's end. */
export function rangeEnds(args: {
  reachedEnd: boolean;
  hasMore: boolean;
  floor: { reachedFloor: boolean; lateBeyondLookback: number };
}): boolean {
  if (!args.hasMore) return true;
  if (args.floor.reachedFloor) return args.floor.lateBeyondLookback === 0;
  return args.reachedEnd;
}

export type TopUpPlan = { done: true; rows: Checkpoint[] } | { done: false; rows: Checkpoint[] };

/**
 * The Plan task of a complete source: read page one, stop with a clear error if the upstream
 * went back in time, record the walk, store page one, and end at once when page one already
 * reaches the floor (nothing new costs one request). Otherwise the Map runs the walk's chains.
 */
export async function planTopUp(
  deps: StepDeps,
  port: TopUpStorePort,
  source: Checkpoint,
  owner: string,
  deadlineMs: number,
): Promise<TopUpPlan> {
  const { store, logger, config } = deps;
  const sourceId = source.sourceId;
  const mark = await markOf(port, source);
  const fetched = await fetchPageOne(deps, source, deadlineMs);
  const { result } = fetched;
  const { page } = result;
  const { events, rejects } = normalisePage(page.data, { invalidUtf8: page.invalidUtf8 === true });
  const newest = events[0];
  if (mark !== null && (page.data.length === 0 || (newest && newest.occurredAtMs < mark.ts))) {
    await store.releaseLease({ sourceId, owner });
    const seen = newest ? `its newest event is at ${iso(newest.occurredAtMs)}` : 'it holds no event at all';
    throw new UpstreamProtocolError(
      `Source "${sourceId}": the upstream shrank or was reset: ${seen}, older than the high-water mark ${iso(mark.ts)} ` +
        'of the rows already stored. Nothing was stored. If the upstream was reset on purpose, ingest it as a new source ' +
        '(another sourceId, or `npm run local -- --reset`); otherwise report it to the API provider.',
    );
  }
  // No mark (a source that stored nothing): the walk goes to the end of the data.
  const floorTs = mark === null ? 0 : Math.max(0, mark.ts - config.lookbackMs);
  const signpost = newest
    ? { ts: newest.occurredAtMs, id: newest.id }
    : { ts: mark?.ts ?? 0, id: mark?.id ?? '' };
  const plan = walkRanges(deps, source, result, events, floorTs);
  let rows = await port.beginTopUp({
    sourceId,
    owner,
    expectedVersion: source.version,
    mark,
    signpost,
    floorTs,
    mode: plan.mode,
    note: plan.note,
    ranges: plan.ranges,
  });
  const head = rows[0];
  if (head?.status !== 'running' || head.marks?.floorTs !== floorTs) return { done: false, rows };
  logger.info('top-up planned', {
    sourceId,
    mark: mark === null ? null : iso(mark.ts),
    signpost: iso(signpost.ts),
    floor: iso(floorTs),
    lookbackMs: config.lookbackMs,
    chains: plan.ranges.length,
    why: plan.note,
  });

  // Page one is chain 0's first page: stored like any page, rows and position in one commit.
  const floor = await atFloor(deps, head, events, sourceId);
  const lo = head.rangeLoTs;
  const reachedEnd = lo !== null && events.some((e) => e.occurredAtMs < lo);
  const rangeDone = rangeEnds({ reachedEnd, hasMore: page.hasMore, floor });
  const position = positionAfter(page.hasMore, page.nextCursor, events, sourceId);
  const persistStarted = deps.clock.now();
  const persisted = await store.persistPage({
    sourceId,
    expectedVersion: head.version,
    owner,
    events,
    rejects,
    pageCursor: null,
    next: {
      cursor: page.hasMore ? page.nextCursor : null,
      positionTs: position.ts,
      positionId: position.id,
      hasMore: page.hasMore,
      nextRequestAtMs: planNextRequest({
        lastRequestStartMs: result.startedAtMs,
        responseAtMs: result.startedAtMs + result.latencyMs,
        minSpacingMs: config.minSpacingMs,
        rateLimit: result.rateLimit,
        safetyMarginMs: config.safetyMarginMs,
      }).notBeforeMs,
      rateLimit: result.rateLimit,
      totalReported: page.total,
      rangeDone,
      lateBeyondLookback: floor.lateBeyondLookback,
    },
    requestsMade: fetched.requests,
    rateLimitedSeen: 0,
  });
  logger.info('page stored', {
    sourceId,
    chain: 0,
    topUp: true,
    page: {
      received: page.data.length,
      inserted: persisted.inserted,
      duplicates: persisted.duplicates,
      rejected: rejects.length,
    },
    ...(floor.lateBeyondLookback > 0 ? { lateBeyondLookback: floor.lateBeyondLookback } : {}),
    requestId: result.requestId,
    upstreamLatencyMs: result.latencyMs,
    persistMs: deps.clock.now() - persistStarted,
    writePath: persisted.writePath,
  });
  if (!rangeDone) return { done: false, rows: await store.listChains(sourceId) };
  const fin = await store.finishRange({
    sourceId,
    chain: 0,
    owner,
    minSplitMs: Number.MAX_SAFE_INTEGER,
    expectedVersion: persisted.checkpoint.version,
  });
  rows = fin.chains;
  if (fin.sourceComplete) {
    const h = rows[0];
    logger.info('top-up complete', {
      sourceId,
      mark: iso(signpost.ts),
      inserted: h?.marks?.lastTopupInserted ?? null,
      requests: fetched.requests,
    });
  }
  return fin.sourceComplete ? { done: true, rows } : { done: false, rows };
}

/** The stored mark, or for a source completed before it had one, its newest stored event. */
async function markOf(
  port: TopUpStorePort,
  source: Checkpoint,
): Promise<{ ts: number; id: string | null } | null> {
  const m = source.marks;
  if (m?.hwmTs !== null && m?.hwmTs !== undefined) return { ts: m.hwmTs, id: m.hwmId };
  return port.newestStored(source.sourceId);
}

/** Page one, through the source's pacing; waits for a slot as long as the invocation allows. */
async function fetchPageOne(deps: StepDeps, source: Checkpoint, deadlineMs: number) {
  const { clock, config, store } = deps;
  // Through the upstream's shared pacer whenever the store has one, as every page is
  // (page.ts): after failed answers the checkpoint's last headers cannot say when a slot frees.
  const shared = store.pacer;
  const from = { ...source, cursor: null, positionTs: null, positionId: null };
  const pacer = new RequestPacer(shared ? { ...source, lastRateLimit: null } : source, config);
  // Every request sent on the way to page one (a 429, a passing 5xx) is counted with it.
  let requests = 0;
  for (;;) {
    const fetched = await fetchWithRecovery(deps, config, from, pacer, deadlineMs, shared ? { shared } : {});
    requests += fetched.requests;
    if (fetched.kind === 'page') return { ...fetched, requests };
    if (fetched.kind === 'built-refused') throw fetched.error;
    const notBefore = fetched.notBeforeMs;
    if (notBefore + config.minAttemptMs > deadlineMs - config.writeHeadroomMs) {
      throw new InvocationDeadlineError(
        `Source "${source.sourceId}": the rate limit allows the top-up's first request only at ${iso(notBefore)}, ` +
          'after this invocation ends. Nothing was lost; the state machine retries the Plan task.',
      );
    }
    await clock.sleep(Math.max(0, notBefore - clock.now()));
  }
}

/**
 * The walk's ranges. One range from page one to the floor, unless the gap is many pages and the
 * upstream's latency calls for chains (the backfill's rule, chainsWanted): then equal spans of
 * time between page one's newest instant and the floor, the last ending at the floor. A source
 * that fell back to one chain (built cursors not honoured) walks with one.
 */
function walkRanges(
  deps: StepDeps,
  source: Checkpoint,
  result: FetchPageResult,
  events: NormalisedEvent[],
  floorTs: number,
): { mode: ChainMode; note: string | null; ranges: PlannedRange[] } {
  const { config } = deps;
  const keep = source.chainMode ?? 'single';
  const one = (note: string) => ({ mode: keep, note, ranges: [{ chain: 0, hiTs: null, loTs: floorTs }] });
  const newest = events[0]?.occurredAtMs;
  const oldest = events.at(-1)?.occurredAtMs;
  if (!result.page.hasMore || newest === undefined || oldest === undefined || oldest < floorTs) {
    return one(source.chainNote ?? 'top-up: page one reaches the floor');
  }
  if (source.chainMode === 'fallback') return one(source.chainNote ?? 'top-up: one chain (fell back before)');
  const wanted = chainsWanted({
    requested: config.chains,
    latencyMs: result.latencyMs,
    minSpacingMs: config.minSpacingMs,
    rateLimit: result.rateLimit,
  });
  const pageSpan = newest - oldest;
  const gapPages = pageSpan > 0 ? (newest - floorTs) / pageSpan : Number.POSITIVE_INFINITY;
  if (wanted.chains < 2 || gapPages < 2 * wanted.chains) {
    return one(`top-up of about ${Math.ceil(gapPages)} pages: one chain (${wanted.why})`);
  }
  const ranges = topUpRanges(newest, oldest, floorTs, wanted.chains);
  if (ranges.length < 2) return one(`top-up: one chain (${wanted.why})`);
  return {
    mode: 'chains',
    note: `top-up of about ${Math.ceil(gapPages)} pages, ${wanted.why}`,
    ranges,
  };
}

/**
 * Equal spans of time between the newest instant and the floor; boundaries inside page one are
 * dropped (chain 0 reads page one anyway). The last range ends at the floor.
 */
export function topUpRanges(
  newestTs: number,
  oldestOnPageTs: number,
  floorTs: number,
  chains: number,
): PlannedRange[] {
  const span = newestTs - floorTs;
  const bounds: number[] = [];
  for (let j = 1; j < chains; j++) {
    const b = Math.round(newestTs - (span * j) / chains);
    if (b < oldestOnPageTs && b > floorTs) bounds.push(b);
  }
  const ranges: PlannedRange[] = [{ chain: 0, hiTs: null, loTs: bounds[0] ?? floorTs }];
  bounds.forEach((hi, i) => {
    ranges.push({ chain: i + 1, hiTs: hi, loTs: bounds[i + 1] ?? floorTs });
  });
  return ranges;
}

/** Where the walk goes on after page one: the server's cursor, or the last row when it was the only page. */
function positionAfter(
  hasMore: boolean,
  nextCursor: string | null,
  events: NormalisedEvent[],
  sourceId: string,
): { ts: number | null; id: string | null } {
  if (!hasMore) {
    const last = events.at(-1);
    return last ? { ts: last.occurredAtMs, id: last.id } : { ts: null, id: null };
  }
  if (!nextCursor) {
    throw new UpstreamProtocolError(
      `Source "${sourceId}": the upstream said hasMore=true on page one but sent no nextCursor. Nothing was stored; start the execution again later.`,
    );
  }
  try {
    const c = decodeCursor(nextCursor);
    return { ts: c.ts, id: c.id };
  } catch (error) {
    throw new UpstreamProtocolError(
      `Source "${sourceId}": the upstream's nextCursor on page one does not decode (${(error as Error).message}). Nothing was stored.`,
    );
  }
}

const iso = (ms: number) => new Date(ms).toISOString();

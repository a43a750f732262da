import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createCursors } from './cursor-position.ts';
import type { Dataset, GrowArgs } from './dataset.ts';
import { createEventsPage } from './events-page.ts';
import type { SimulatorOptions } from './options.ts';
import { RateLimiter } from './rate-limiter.ts';
import { createRequestFaults } from './request-faults.ts';
import { ResponseCache } from './response-cache.ts';
import {
  createResponseWriter,
  errorReply,
  expressEtag,
  hostileErrorReply,
  MANIFEST_BODY,
  rateLimitedReply,
  writePadded,
} from './responses.ts';
import { emptyStats } from './stats.ts';

/*
 * Routing and the order of the service's checks: rate limit (per presented key, errors included),
 * then authentication, then the route; faults; the cache; latency; the page. The parts:
 *   events-page.ts      the limit, rows and body of /api/v1/events;
 *   cursor-position.ts  the cursor codec, expiry and position;
 *   rate-limiter.ts     the fixed and sliding windows;
 *   request-faults.ts   transient errors, truncated bodies, duplicate rows, latency (latency.ts);
 *   response-cache.ts   X-Cache;
 *   responses.ts        headers and bodies as the captures show them.
 */

export { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './events-page.ts';
export { MAX_DUPLICATE_ROWS } from './request-faults.ts';
export { expressEtag, MANIFEST_BODY } from './responses.ts';
export { emptyStats, type SimStats } from './stats.ts';

const EVENTS_PATH = '/api/v1/events';

/** The request handler and its state. Durations are real milliseconds, already divided by timeScale. */
export function createRequestHandler(options: SimulatorOptions, dataset: Dataset, hooks: GrowthHooks = {}) {
  const stats = emptyStats();
  const scale = options.timeScale;
  const windowMs = (options.windowSeconds * 1000) / scale;
  const ttlMs = (options.cursorTtlSeconds * 1000) / scale;
  const cacheTtlMs = (options.cacheTtlSeconds * 1000) / scale;
  const cursorExpiresIn = scale === 1 ? options.cursorTtlSeconds : Math.round((ttlMs / 1000) * 1000) / 1000;
  const limiter =
    options.rateLimit > 0
      ? new RateLimiter({
          limit: options.rateLimit,
          windowMs,
          mode: options.windowMode,
          countRejected: options.countRejected,
          resetBasis: options.resetBasis,
          windowAlign: options.windowAlign,
        })
      : null;
  const cache = new ResponseCache(cacheTtlMs);
  const faults = createRequestFaults(options);
  const cursors = createCursors({
    dataset,
    stats,
    rejectRefreshedCursors: options.rejectRefreshedCursors,
    builtCursors: options.builtCursors,
    ttlMs,
    scale,
  });
  const eventsPage = createEventsPage({ dataset, cursors, faults, stats, cursorExpiresIn });
  const { write, writeLoadBalancerError } = createResponseWriter(
    stats,
    scale,
    cacheTtlMs,
    options.resetRounding,
  );
  let sequence = 0;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://simulator.invalid');
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
    const method = req.method ?? 'GET';

    if (path === '/__sim/grow') {
      // Not the service's: adds events at once, e.g. POST /__sim/grow?newer=12000&late=40.
      const reply = growFromQuery(dataset, url, method, hooks);
      res.writeHead(reply.status, {
        'Content-Type': 'application/json; charset=utf-8',
        'Content-Length': String(Buffer.byteLength(reply.body)),
      });
      res.end(reply.body);
      return;
    }
    if (path === '/__sim/stats') {
      const body = JSON.stringify(stats);
      res.writeHead(200, {
        'Content-Type': 'application/json; charset=utf-8',
        'Content-Length': String(Buffer.byteLength(body)),
      });
      res.end(body);
      return;
    }

    stats.requests++;
    const requestId = randomUUID();
    const readable = method === 'GET' || method === 'HEAD';

    if (path === '/api/v1' && readable) {
      write(req, res, { status: 200, requestId, rate: null, body: MANIFEST_BODY });
      return;
    }
    if (!path.startsWith('/api/v1/')) {
      const message = `Route ${method} ${path} not found: the API lives under /api/v1 (GET /api/v1/events)`;
      write(req, res, errorReply(404, requestId, null, 'Not Found', message, 'NOT_FOUND'));
      return;
    }

    // Everything under /api/v1/ is rate limited per presented key (errors included), then authenticated.
    const now = Date.now();
    const headerKey = req.headers['x-api-key'];
    const apiKey = (Array.isArray(headerKey) ? headerKey[0] : headerKey) ?? '';
    // A server that does not count its errors: a 404 lookup or a transient 5xx only reads the
    // window. The transient fault is decided first (by the events request's number, which
    // only a request that passes the limiter and the key uses up) for that.
    const lookup = !(readable && path === EVENTS_PATH);
    const n = sequence + 1;
    const transient = lookup ? null : faults.transientStatus(n);
    const counted = !options.uncountedErrors || (!lookup && transient === null);
    const rate = limiter ? (counted ? limiter.hit(apiKey, now) : limiter.peek(apiKey, now)) : null;
    if (rate && !rate.allowed) {
      write(req, res, rateLimitedReply(rate, requestId, options.resetRounding, scale));
      return;
    }
    if (apiKey === '') {
      const message = 'API key required: send it in the X-API-Key header';
      write(req, res, errorReply(401, requestId, rate, 'Unauthorized', message, 'MISSING_API_KEY'));
      return;
    }
    if (apiKey !== options.apiKey) {
      const message = 'Invalid API key: check the X-API-Key header';
      write(req, res, errorReply(403, requestId, rate, 'Forbidden', message, 'INVALID_API_KEY'));
      return;
    }

    if (readable && path.startsWith(`${EVENTS_PATH}/`)) {
      let id = path.slice(EVENTS_PATH.length + 1);
      try {
        id = decodeURIComponent(id);
      } catch {
        // A malformed escape is still just an id that does not exist.
      }
      const message = `Event with id '${id}' not found`;
      write(req, res, errorReply(404, requestId, rate, 'Not Found', message, 'EVENT_NOT_FOUND'));
      return;
    }
    if (!(readable && path === EVENTS_PATH)) {
      const message = `Route ${method} ${path} not found: this simulator serves GET /api/v1 and GET /api/v1/events`;
      write(req, res, errorReply(404, requestId, rate, 'Not Found', message, 'NOT_FOUND'));
      return;
    }

    sequence = n;
    if (transient !== null) {
      stats.faults.transientError++;
      writeLoadBalancerError(req, res, transient, options.errorHeaders ? rate : null);
      return;
    }

    const bodyFault = method === 'GET' ? faults.bodyFault(n) : null;
    if (bodyFault === 'hostileError') {
      stats.faults.hostileError++;
      write(req, res, hostileErrorReply(requestId, rate, apiKey));
      return;
    }

    const cacheKey = `${apiKey} ${req.url}`;
    const cached = method === 'GET' ? cache.get(cacheKey, now) : undefined;
    if (cached) {
      stats.cacheHits++;
      stats.pages++;
      write(req, res, { status: 200, rate, ...cached, cache: 'HIT' });
      return;
    }

    // The page is built first because its latency depends on its rows; its instants (cursor exp,
    // cache expiry) stay those of the request's arrival, whatever the page's latency.
    const { rows, ...reply } = eventsPage(url, now, requestId, rate);
    const latency = faults.latencyMs(n, rows);
    if (latency > 0) {
      stats.faults.latencyMsTotal += latency / scale;
      await new Promise((resolve) => setTimeout(resolve, latency / scale));
    }
    if (reply.status === 200 && (bodyFault === 'oversize' || bodyFault === 'endless')) {
      stats.faults[bodyFault === 'oversize' ? 'oversizeBody' : 'endlessBody']++;
      writePadded(res, reply, options.oversizeBodyBytes, bodyFault === 'endless');
      return;
    }
    if (reply.status === 200) {
      reply.etag = expressEtag(reply.body);
      if (method === 'GET') cache.set(cacheKey, { body: reply.body, etag: reply.etag, requestId }, now);
      const cut = method === 'GET' ? faults.truncateAt(n, reply.body.length) : null;
      if (cut !== null) {
        stats.faults.truncatedBody++;
        reply.truncateTo = cut;
      }
    }
    write(req, res, reply);
  }

  return { handle, stats: () => structuredClone(stats) };
}

/** Told of every growth, so that a caller can replay it on a later start (the local runner does). */
export interface GrowthHooks {
  onGrow?: (args: GrowArgs) => void;
}

const GROW_PARAMS = ['newer', 'late', 'beyond', 'lateSeconds'] as const;

/** POST /__sim/grow?newer=N&late=K&beyond=J&lateSeconds=S: the growth's result, or a 400 naming the bad parameter. */
function growFromQuery(
  dataset: Dataset,
  url: URL,
  method: string,
  hooks: GrowthHooks,
): { status: number; body: string } {
  const fail = (status: number, message: string) => ({ status, body: JSON.stringify({ error: message }) });
  if (method !== 'POST') return fail(405, 'use POST /__sim/grow?newer=N&late=K&beyond=J&lateSeconds=S');
  const values: Record<string, number> = {};
  for (const [key, raw] of url.searchParams) {
    if (!(GROW_PARAMS as readonly string[]).includes(key)) {
      return fail(400, `unknown parameter ${JSON.stringify(key)}: pass ${GROW_PARAMS.join(', ')}`);
    }
    const n = Number(raw);
    if (
      raw.trim() === '' ||
      !Number.isFinite(n) ||
      n < 0 ||
      (key !== 'lateSeconds' && !Number.isInteger(n))
    ) {
      return fail(
        400,
        `${key} must be a whole number of events, 0 or more (lateSeconds: seconds above 0), got ${JSON.stringify(raw)}`,
      );
    }
    values[key] = n;
  }
  const args: GrowArgs = {
    newer: values.newer ?? 0,
    lateWithin: values.late ?? 0,
    lateBeyond: values.beyond ?? 0,
    // Instants are the data set's own: the time scale does not shrink them.
    lookbackMs: Math.max(1, Math.round((values.lateSeconds ?? 600) * 1000)),
  };
  try {
    const result = dataset.grow(args);
    hooks.onGrow?.(args);
    return { status: 200, body: JSON.stringify(result) };
  } catch (error) {
    return fail(400, (error as Error).message);
  }
}

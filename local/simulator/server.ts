import { createHash, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { CURSOR_VERSION, type CursorPayload, decodeCursor, encodeCursor } from '#shared/cursor.ts';
import type { Dataset } from './dataset.ts';
import { hash3, SALT, unit } from './hash.ts';
import type { SimulatorOptions } from './options.ts';
import { type RateDecision, RateLimiter } from './rate-limiter.ts';

/** The `/api/v1` manifest, byte for byte as `captures/01-root.http`. */
export const MANIFEST_BODY =
  '{"name":"DataSync Analytics API","version":"v1","endpoints":{"events":"/api/v1/events","sessions":"/api/v1/sessions","metrics":"/api/v1/metrics"},"authentication":{"method":"API Key","header":"X-API-Key"}}';

export const MAX_PAGE_SIZE = 5000;
export const DEFAULT_PAGE_SIZE = 100;
/** Most rows a duplicate-row fault repeats from before the cursor. */
export const MAX_DUPLICATE_ROWS = 25;
const CACHE_ENTRIES = 8;
const TRANSIENT_STATUSES = [500, 502, 503, 504] as const;
const STATUS_TEXT: Record<number, string> = {
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Temporarily Unavailable',
  504: 'Gateway Time-out',
};

export interface SimStats {
  /** Every request the server answered, /__sim/stats excluded. */
  requests: number;
  byStatus: Record<string, number>;
  ok: number;
  rateLimited: number;
  cacheHits: number;
  /** 200 responses of /api/v1/events (HEAD included). */
  pages: number;
  /** Rows sent in 200 bodies (duplicates included). */
  eventsServed: number;
  faults: {
    transientError: number;
    truncatedBody: number;
    /** Pages that repeated rows from before their cursor, and how many rows that was. */
    duplicatePages: number;
    duplicateRows: number;
    malformedTimestamp: number;
    missingField: number;
    epochSeconds: number;
    controlChar: number;
    refreshedCursorRejected: number;
    latencyMsTotal: number;
  };
}

export function emptyStats(): SimStats {
  return {
    requests: 0,
    byStatus: {},
    ok: 0,
    rateLimited: 0,
    cacheHits: 0,
    pages: 0,
    eventsServed: 0,
    faults: {
      transientError: 0,
      truncatedBody: 0,
      duplicatePages: 0,
      duplicateRows: 0,
      malformedTimestamp: 0,
      missingField: 0,
      epochSeconds: 0,
      controlChar: 0,
      refreshedCursorRejected: 0,
      latencyMsTotal: 0,
    },
  };
}

interface CacheEntry {
  body: string;
  etag: string;
  requestId: string;
  expiresAt: number;
}

interface Reply {
  status: number;
  body: string;
  requestId: string;
  rate: RateDecision | null;
  cache?: 'MISS' | 'HIT';
  etag?: string;
  /** Bytes actually sent when the body is cut short (truncated-body fault). */
  truncateTo?: number;
}

/** Express's weak ETag: length in hex and the first 27 characters of the base64 SHA-1. */
export function expressEtag(body: string): string {
  const hash = createHash('sha1').update(body, 'utf8').digest('base64').slice(0, 27);
  return `W/"${Buffer.byteLength(body, 'utf8').toString(16)}-${hash}"`;
}

function errorBody(error: string, message: string, code: string): string {
  return JSON.stringify({ error, message, code });
}

/** The request handler and its state. Durations are real milliseconds, already divided by timeScale. */
export function createRequestHandler(options: SimulatorOptions, dataset: Dataset) {
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
        })
      : null;
  const cache = new Map<string, CacheEntry>();
  /** exp of every cursor issued, by position: what rejectRefreshedCursors compares against. */
  const issued = new Map<string, number>();
  const seed = options.seed >>> 0;
  let sequence = 0;

  function count(status: number): void {
    stats.byStatus[status] = (stats.byStatus[status] ?? 0) + 1;
    if (status === 200) stats.ok++;
    if (status === 429) stats.rateLimited++;
  }

  function write(req: IncomingMessage, res: ServerResponse, reply: Reply): void {
    count(reply.status);
    const head = req.method === 'HEAD';
    const sent = reply.truncateTo === undefined ? reply.body : reply.body.slice(0, reply.truncateTo);
    const headers: Record<string, string> = {
      Date: new Date().toUTCString(),
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(sent, 'utf8')),
      // Set explicitly so Node does not add its own `Keep-Alive: timeout=5`, absent from the captures.
      Connection: 'keep-alive',
      'X-Powered-By': 'Express',
      'Access-Control-Allow-Origin': '*',
      'X-Request-ID': reply.requestId,
    };
    if (reply.rate) {
      const resetExact = Math.max(0, reply.rate.resetMs) / 1000;
      const reset = Math.ceil(resetExact);
      headers['X-RateLimit-Limit'] = String(reply.rate.limit);
      headers['X-RateLimit-Remaining'] = String(reply.rate.remaining);
      headers['X-RateLimit-Reset'] = String(reset);
      if (scale !== 1) headers['X-RateLimit-Reset-Exact'] = resetExact.toFixed(3);
      if (reply.status === 429) {
        headers['Retry-After'] = String(reset);
        if (scale !== 1) headers['Retry-After-Exact'] = resetExact.toFixed(3);
      }
    }
    if (reply.cache && !head) {
      headers['X-Cache'] = reply.cache;
      headers['X-Cache-TTL'] = String(Math.ceil(cacheTtlMs / 1000));
    }
    headers.ETag = reply.etag ?? expressEtag(reply.body);
    res.sendDate = false;
    res.writeHead(reply.status, headers);
    res.end(head ? undefined : sent);
  }

  function writeLoadBalancerError(req: IncomingMessage, res: ServerResponse, status: number): void {
    count(status);
    const title = `${status} ${STATUS_TEXT[status]}`;
    const body = `<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n<center><h1>${title}</h1></center>\r\n</body>\r\n</html>\r\n`;
    res.sendDate = false;
    res.writeHead(status, {
      Date: new Date().toUTCString(),
      'Content-Type': 'text/html',
      'Content-Length': String(Buffer.byteLength(body)),
      Connection: 'keep-alive',
      Server: 'awselb/2.0',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  function rateLimited(rate: RateDecision, requestId: string): Reply {
    const reset = Math.ceil(Math.max(0, rate.resetMs) / 1000);
    return {
      status: 429,
      requestId,
      rate,
      body: JSON.stringify({
        error: 'Too Many Requests',
        message: `Rate limit exceeded. Try again in ${reset} seconds.`,
        code: 'RATE_LIMIT_EXCEEDED',
        rateLimit: { limit: rate.limit, remaining: 0, reset, retryAfter: reset },
      }),
    };
  }

  function cursorExpired(expMs: number, now: number, requestId: string, rate: RateDecision | null): Reply {
    const minutes = Math.max(1, Math.round(((now - expMs) * scale) / 60_000));
    return {
      status: 400,
      requestId,
      rate,
      body: errorBody('Bad Request', `Cursor expired ${minutes} minute(s) ago`, 'CURSOR_EXPIRED'),
    };
  }

  function eventsPage(url: URL, now: number, requestId: string, rate: RateDecision | null): Reply {
    const limitParam = url.searchParams.get('limit');
    let limit = DEFAULT_PAGE_SIZE;
    if (limitParam !== null) {
      const n = /^\d+$/.test(limitParam.trim()) ? Number(limitParam.trim()) : Number.NaN;
      if (!(n >= 1)) {
        return {
          status: 400,
          requestId,
          rate,
          body: errorBody(
            'Bad Request',
            `Invalid limit '${limitParam}': pass a positive integer (at most ${MAX_PAGE_SIZE}; larger values are capped)`,
            'INVALID_LIMIT',
          ),
        };
      }
      limit = Math.min(MAX_PAGE_SIZE, n);
    }

    let start = 0;
    const cursorParam = url.searchParams.get('cursor');
    if (cursorParam) {
      let cursor: CursorPayload;
      try {
        cursor = decodeCursor(cursorParam);
        if (cursor.v !== CURSOR_VERSION) throw new Error('version');
      } catch {
        return {
          status: 400,
          requestId,
          rate,
          body: errorBody('Bad Request', 'Invalid cursor format', 'CURSOR_INVALID_FORMAT'),
        };
      }
      if (options.rejectRefreshedCursors) {
        const issuedExp = issued.get(`${cursor.ts}:${cursor.id}`);
        if (issuedExp !== cursor.exp) {
          stats.faults.refreshedCursorRejected++;
          return cursorExpired(Math.min(issuedExp ?? now, now), now, requestId, rate);
        }
      }
      if (cursor.exp < now) return cursorExpired(cursor.exp, now, requestId, rate);
      start = dataset.indexAfter(cursor.ts, cursor.id);
    }

    let from = start;
    if (options.duplicateRowRate > 0 && start > 0) {
      if (unit(hash3(seed, start, SALT.duplicate)) < options.duplicateRowRate) {
        const k = 1 + (hash3(seed, start, SALT.duplicate + 1) % Math.min(start, MAX_DUPLICATE_ROWS));
        from = start - k;
        stats.faults.duplicatePages++;
        stats.faults.duplicateRows += k;
      }
    }
    const end = Math.min(dataset.total, from + limit);
    const { json, faults } = dataset.serialiseRange(from, end);
    for (const [kind, n] of Object.entries(faults)) {
      stats.faults[kind as keyof typeof faults] += n ?? 0;
    }
    const hasMore = end < dataset.total;
    let nextCursor = 'null';
    if (hasMore) {
      const ts = dataset.timestampAt(end - 1);
      const id = dataset.idAt(end - 1);
      const exp = now + Math.round(ttlMs);
      issued.set(`${ts}:${id}`, exp);
      nextCursor = `"${encodeCursor({ id, ts, v: CURSOR_VERSION, exp })}"`;
    }
    stats.pages++;
    stats.eventsServed += end - from;
    const body = `{"data":[${json}],"pagination":{"limit":${limit},"hasMore":${hasMore},"nextCursor":${nextCursor},"cursorExpiresIn":${cursorExpiresIn}},"meta":{"total":${dataset.total},"returned":${end - from},"requestId":"${requestId}"}}`;
    return { status: 200, requestId, rate, body, cache: 'MISS' };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://simulator.invalid');
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
    const method = req.method ?? 'GET';

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
      write(req, res, {
        status: 404,
        requestId,
        rate: null,
        body: errorBody(
          'Not Found',
          `Route ${method} ${path} not found: the API lives under /api/v1 (GET /api/v1/events)`,
          'NOT_FOUND',
        ),
      });
      return;
    }

    // Everything under /api/v1/ is rate limited per presented key (errors included), then authenticated.
    const now = Date.now();
    const headerKey = req.headers['x-api-key'];
    const apiKey = (Array.isArray(headerKey) ? headerKey[0] : headerKey) ?? '';
    const rate = limiter ? limiter.hit(apiKey, now) : null;
    if (rate && !rate.allowed) {
      write(req, res, rateLimited(rate, requestId));
      return;
    }
    if (apiKey === '') {
      write(req, res, {
        status: 401,
        requestId,
        rate,
        body: errorBody(
          'Unauthorized',
          'API key required: send it in the X-API-Key header',
          'MISSING_API_KEY',
        ),
      });
      return;
    }
    if (apiKey !== options.apiKey) {
      write(req, res, {
        status: 403,
        requestId,
        rate,
        body: errorBody('Forbidden', 'Invalid API key: check the X-API-Key header', 'INVALID_API_KEY'),
      });
      return;
    }

    if (readable && path.startsWith('/api/v1/events/')) {
      let id = path.slice('/api/v1/events/'.length);
      try {
        id = decodeURIComponent(id);
      } catch {
        // A malformed escape is still just an id that does not exist.
      }
      write(req, res, {
        status: 404,
        requestId,
        rate,
        body: errorBody('Not Found', `Event with id '${id}' not found`, 'EVENT_NOT_FOUND'),
      });
      return;
    }
    if (!(readable && path === '/api/v1/events')) {
      write(req, res, {
        status: 404,
        requestId,
        rate,
        body: errorBody(
          'Not Found',
          `Route ${method} ${path} not found: this simulator serves GET /api/v1 and GET /api/v1/events`,
          'NOT_FOUND',
        ),
      });
      return;
    }

    // Faults decided by the request's sequence number, so a run is reproducible from the seed.
    const n = ++sequence;
    if (options.transientErrorRate > 0 && unit(hash3(seed, n, SALT.transient)) < options.transientErrorRate) {
      stats.faults.transientError++;
      writeLoadBalancerError(req, res, TRANSIENT_STATUSES[hash3(seed, n, SALT.transient + 1) % 4]!);
      return;
    }

    const cacheKey = `${apiKey} ${req.url}`;
    const cached = method === 'GET' ? cache.get(cacheKey) : undefined;
    if (cached && cached.expiresAt > now) {
      stats.cacheHits++;
      stats.pages++;
      write(req, res, {
        status: 200,
        requestId: cached.requestId,
        rate,
        body: cached.body,
        etag: cached.etag,
        cache: 'HIT',
      });
      return;
    }

    const latency = options.latencyMs + options.latencyJitterMs * unit(hash3(seed, n, SALT.latency));
    if (latency > 0) {
      stats.faults.latencyMsTotal += latency / scale;
      await new Promise((resolve) => setTimeout(resolve, latency / scale));
    }

    const reply = eventsPage(url, now, requestId, rate);
    if (reply.status === 200) {
      reply.etag = expressEtag(reply.body);
      if (method === 'GET' && cacheTtlMs > 0) {
        cache.delete(cacheKey);
        cache.set(cacheKey, {
          body: reply.body,
          etag: reply.etag,
          requestId,
          expiresAt: now + cacheTtlMs,
        });
        if (cache.size > CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
      }
      if (
        method === 'GET' &&
        options.truncatedBodyRate > 0 &&
        unit(hash3(seed, n, SALT.truncate)) < options.truncatedBodyRate
      ) {
        stats.faults.truncatedBody++;
        const cut = 0.1 + 0.8 * unit(hash3(seed, n, SALT.truncate + 1));
        reply.truncateTo = Math.floor(reply.body.length * cut);
      }
    }
    write(req, res, reply);
  }

  return { handle, stats: () => structuredClone(stats) };
}

import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type RateDecision, type ResetRounding, resetSecondsOf } from './rate-limiter.ts';
import { countStatus, type SimStats } from './stats.ts';

/*
 * Response writing: the live service's headers (Express behind an AWS load balancer), in the
 * order and form of the captures.
 */

/** The `/api/v1` manifest, byte for byte as `captures/01-root.http`. */
export const MANIFEST_BODY =
  '{"name":"DataSync Analytics API","version":"v1","endpoints":{"events":"/api/v1/events","sessions":"/api/v1/sessions","metrics":"/api/v1/metrics"},"authentication":{"method":"API Key","header":"X-API-Key"}}';

const STATUS_TEXT: Record<number, string> = {
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Temporarily Unavailable',
  504: 'Gateway Time-out',
};

/** One answer of the API (as opposed to the load balancer in front of it). */
export interface Reply {
  status: number;
  body: string;
  requestId: string;
  rate: RateDecision | null;
  cache?: 'MISS' | 'HIT';
  etag?: string;
  /** Bytes actually sent when the body is cut short (truncated-body fault). */
  truncateTo?: number;
  /** Answered by the load balancer in front (its HTML page for `status`) rather than the API. */
  fromLoadBalancer?: boolean;
}

/** Express's weak ETag: length in hex and the first 27 characters of the base64 SHA-1. */
export function expressEtag(body: string): string {
  const hash = createHash('sha1').update(body, 'utf8').digest('base64').slice(0, 27);
  return `W/"${Buffer.byteLength(body, 'utf8').toString(16)}-${hash}"`;
}

export function errorBody(error: string, message: string, code: string): string {
  return JSON.stringify({ error, message, code });
}

/** A JSON error reply of the API. */
export function errorReply(
  status: number,
  requestId: string,
  rate: RateDecision | null,
  error: string,
  message: string,
  code: string,
): Reply {
  return { status, requestId, rate, body: errorBody(error, message, code) };
}

/** The 429 answer, its body as the live service's. */
export function rateLimitedReply(
  rate: RateDecision,
  requestId: string,
  rounding: ResetRounding = 'exact',
  scale = 1,
): Reply {
  const reset = Math.ceil(resetSecondsOf(rate.resetMs, rounding, scale) - 1e-9);
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

/**
 * A 401 whose message a terminal would obey: a newline, ANSI colour codes and the presented key
 * (an upstream that echoes what it refused). The client must escape and mask it.
 */
export function hostileErrorReply(requestId: string, rate: RateDecision | null, apiKey: string): Reply {
  const message = `Invalid API key '${apiKey}'\n\u001b[31mACCESS DENIED\u001b[0m verification: OK`;
  return errorReply(401, requestId, rate, 'Unauthorized', message, 'INVALID_API_KEY');
}

const PAD_CHUNK = Buffer.alloc(1024 * 1024, 0x20);

/**
 * Sends `body` padded with whitespace before its last character to `bytes` in all (still valid
 * JSON), chunk by chunk with back-pressure, so the server never holds the padded body. `endless`:
 * no Content-Length and padding until the client goes away.
 */
export function writePadded(res: ServerResponse, reply: Reply, bytes: number, endless: boolean): void {
  const head = Buffer.from(reply.body.slice(0, -1), 'utf8');
  const tail = Buffer.from(reply.body.slice(-1), 'utf8');
  let left = endless ? Number.POSITIVE_INFINITY : Math.max(0, bytes - head.length - tail.length);
  const headers: Record<string, string> = {
    'Content-Type': 'application/json; charset=utf-8',
    'X-Request-ID': reply.requestId,
  };
  if (!endless) headers['Content-Length'] = String(head.length + left + tail.length);
  res.writeHead(reply.status, headers);
  let closed = false;
  res.on('close', () => {
    closed = true;
  });
  res.write(head);
  const pump = (): void => {
    while (!closed && left > 0) {
      const n = Math.min(left, PAD_CHUNK.length);
      left -= n;
      if (!res.write(n === PAD_CHUNK.length ? PAD_CHUNK : PAD_CHUNK.subarray(0, n))) {
        res.once('drain', pump);
        return;
      }
    }
    if (!closed) res.end(tail);
  };
  pump();
}

export interface ResponseWriter {
  write(req: IncomingMessage, res: ServerResponse, reply: Reply): void;
  /** The HTML error page of the load balancer, for transient 5xx faults (with the rate-limit headers when `rate`). */
  writeLoadBalancerError(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    rate?: RateDecision | null,
  ): void;
}

/**
 * `scale` is the time scale: when it is not 1 the whole-second rate-limit headers are joined by
 * `-Exact` ones, because a client pacing a scaled window cannot work from whole seconds.
 */
export function createResponseWriter(
  stats: SimStats,
  scale: number,
  cacheTtlMs: number,
  rounding: ResetRounding = 'exact',
): ResponseWriter {
  /** X-RateLimit-* (and Retry-After on a 429), whole seconds as the member rounds them, `-Exact` when scaled. */
  function rateHeaders(headers: Record<string, string>, rate: RateDecision, refused: boolean): void {
    const resetExact = resetSecondsOf(rate.resetMs, rounding, scale);
    const reset = Math.ceil(resetExact - 1e-9);
    headers['X-RateLimit-Limit'] = String(rate.limit);
    headers['X-RateLimit-Remaining'] = String(rate.remaining);
    headers['X-RateLimit-Reset'] = String(reset);
    if (scale !== 1) headers['X-RateLimit-Reset-Exact'] = resetExact.toFixed(3);
    if (refused) {
      headers['Retry-After'] = String(reset);
      if (scale !== 1) headers['Retry-After-Exact'] = resetExact.toFixed(3);
    }
  }

  function writeLoadBalancerError(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    rate?: RateDecision | null,
  ): void {
    countStatus(stats, status);
    const title = `${status} ${STATUS_TEXT[status]}`;
    const body = `<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n<center><h1>${title}</h1></center>\r\n</body>\r\n</html>\r\n`;
    res.sendDate = false;
    const headers: Record<string, string> = {
      Date: new Date().toUTCString(),
      'Content-Type': 'text/html',
      'Content-Length': String(Buffer.byteLength(body)),
      Connection: 'keep-alive',
      Server: 'awselb/2.0',
    };
    if (rate) rateHeaders(headers, rate, false);
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  function write(req: IncomingMessage, res: ServerResponse, reply: Reply): void {
    if (reply.fromLoadBalancer) {
      writeLoadBalancerError(req, res, reply.status);
      return;
    }
    countStatus(stats, reply.status);
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
    if (reply.rate) rateHeaders(headers, reply.rate, reply.status === 429);
    if (reply.cache && !head) {
      headers['X-Cache'] = reply.cache;
      headers['X-Cache-TTL'] = String(Math.ceil(cacheTtlMs / 1000));
    }
    headers.ETag = reply.etag ?? expressEtag(reply.body);
    res.sendDate = false;
    res.writeHead(reply.status, headers);
    res.end(head ? undefined : sent);
  }

  return { write, writeLoadBalancerError };
}

/** The load balancer's statuses for transient faults. */
export const TRANSIENT_STATUSES = [500, 502, 503, 504] as const;

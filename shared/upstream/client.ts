import { z } from 'zod';
import { configDefaults } from '../config.ts';
import {
  AuthError,
  ConfigError,
  CursorExpiredError,
  CursorInvalidError,
  RateLimitedError,
  type RateLimitInfo,
  UpstreamProtocolError,
  UpstreamUnavailableError,
} from '../errors.ts';
import { capWaitSeconds, readRateLimitHeaders, readRetryAfter } from '../pacing/rate-limit-headers.ts';
import { isHttpUrl } from '../url.ts';
import { escapeText, maskSecrets, maskUrl } from './escape.ts';
import { findUnexactNumbers } from './numbers.ts';
import { type ErrorBody, errorBodySchema, parseEventsBody } from './schemas.ts';
import type { FetchPageResult } from './types.ts';

/** About one 5000-event page of the live service, in bytes (docs: ~1.73 MB). */
export const PAGE_BYTES = 1_730_000;
/**
 * The most bytes of one response body the client reads: 16 pages of 5000 events. A page many times
 * the live one (1 MB and 5 MB values fit) still passes; a 200 MB page or a body that never ends is
 * cut there, refused early when its Content-Length says so, and is a transient error (retried),
 * so the memory of one request stays bounded.
 */
export const MAX_RESPONSE_BYTES = 16 * PAGE_BYTES;

export interface DataSyncClientOptions {
  /** API base, e.g. `http://127.0.0.1:4010/api/v1` (DATASYNC_API_URL). */
  baseUrl: string;
  /** Sent as `X-API-Key`. */
  apiKey: string;
  /** Whole request including the body read. @default configDefaults.requestTimeoutMs */
  timeoutMs?: number;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
  /** @default 'datasync-ingest/0.1' */
  userAgent?: string;
  /** Wall clock for startedAtMs/latencyMs. @default Date.now */
  now?: () => number;
  /** Most bytes of a response body read before the response is refused. @default MAX_RESPONSE_BYTES */
  maxResponseBytes?: number;
}

export interface FetchEventsParams {
  limit: number;
  cursor?: string | null;
  /** The caller's cancellation; combined with the client's own timeout. */
  signal?: AbortSignal;
  /** A tighter timeout for this request (the time the invocation has left); the client's own applies when it is shorter. */
  timeoutMs?: number;
}

export interface DataSyncClient {
  /**
   * One `GET {base}/events`. No retries: the caller owns the retry policy. Throws:
   * - {@link RateLimitedError} on 429 (retryAfterSeconds from Retry-After(-Exact), else the reset, else 1);
   * - {@link CursorExpiredError} / {@link CursorInvalidError} on 400 CURSOR_EXPIRED / CURSOR_INVALID_FORMAT;
   * - {@link AuthError} on 401/403;
   * - {@link UpstreamUnavailableError} on 5xx, network failure, timeout, truncated or non-JSON body,
   *   or a body over `maxResponseBytes` (not read past the cap).
   *   Its `status` is the HTTP status (undefined for network faults). A 502 answered to a request
   *   that carried a cursor may be the server refusing that cursor (one observer saw it): the
   *   caller recognises it by `status === 502` and its own cursor, and decides;
   * - {@link UpstreamProtocolError} on any other status or a 200 body that is not an events page.
   * A cancellation through `params.signal` rethrows the signal's reason unchanged.
   */
  fetchEvents(params: FetchEventsParams): Promise<FetchPageResult>;
}

const optionsSchema = z.object({
  baseUrl: z.string(),
  apiKey: z.string(),
  timeoutMs: z.number().int().positive().max(900_000).default(configDefaults.requestTimeoutMs),
  userAgent: z.string().min(1).default('datasync-ingest/0.1'),
  maxResponseBytes: z.number().int().positive().default(MAX_RESPONSE_BYTES),
});

/** Creates the client. Throws {@link ConfigError} for a malformed base URL or an empty API key. */
export function createDataSyncClient(opts: DataSyncClientOptions): DataSyncClient {
  const parsed = optionsSchema.safeParse(opts);
  if (!parsed.success) {
    throw new ConfigError(
      `Invalid DataSync client options: pass the API base URL, the key and a positive timeout.\n${z.prettifyError(parsed.error)}`,
    );
  }
  const { timeoutMs, userAgent, maxResponseBytes } = parsed.data;
  const eventsUrl = eventsEndpoint(parsed.data.baseUrl);
  const apiKey = parsed.data.apiKey.trim();
  if (apiKey === '') {
    throw new ConfigError(
      'The DataSync API key is empty: set DATASYNC_API_KEY (local runs) or the DATASYNC_API_KEY secret (deployed) to the key',
    );
  }
  const doFetch = opts.fetch ?? globalThis.fetch;
  const now = opts.now ?? Date.now;

  return {
    async fetchEvents({ limit, cursor, signal, timeoutMs: bound }) {
      if (!Number.isInteger(limit) || limit < 1) {
        throw new ConfigError(
          `Page size ${limit} is invalid: PAGE_SIZE must be a whole number from 1 to 5000`,
        );
      }
      const url = new URL(eventsUrl);
      url.searchParams.set('limit', String(limit));
      if (cursor) url.searchParams.set('cursor', cursor);
      const hasCursor = Boolean(cursor);

      const requestTimeoutMs = Math.max(1, Math.floor(Math.min(timeoutMs, bound ?? timeoutMs)));
      const timeout = AbortSignal.timeout(requestTimeoutMs);
      const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
      const startedAtMs = now();

      let response: Response;
      let bytes: Uint8Array;
      try {
        response = await doFetch(url, {
          method: 'GET',
          headers: { 'X-API-Key': apiKey, Accept: 'application/json', 'User-Agent': userAgent },
          // A redirect could carry the API key to another host; a moved API is a configuration matter.
          redirect: 'manual',
          signal: combined,
        });
        bytes = await readCapped(response, maxResponseBytes);
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (error instanceof TooLarge) throw tooLargeError(error, maxResponseBytes, hasCursor);
        throw transportError(error, timeout.aborted, requestTimeoutMs, url, hasCursor);
      }
      const latencyMs = now() - startedAtMs;
      const status = response.status;
      const headers = response.headers;
      const rateLimit = parseRateLimit(headers);
      const rawRequestId = headers.get('x-request-id');
      const requestId = rawRequestId === null ? null : escapeText(rawRequestId, 100);
      const { text, invalidUtf8 } = decodeUtf8(bytes);

      if (status >= 200 && status < 300) {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch (error) {
          throw new UpstreamUnavailableError(
            `The events response (HTTP ${status}, ${bytes.byteLength} bytes${requestIdNote(requestId)}) is not valid JSON ` +
              `(${(error as Error).message}): probably a truncated body; the request is safe to retry`,
            status,
            { cause: error },
          );
        }
        const page = parseEventsBody(json);
        if (invalidUtf8) page.invalidUtf8 = true;
        const unexact = findUnexactNumbers(text);
        if (unexact.length > 0) page.unexact = unexact;
        return {
          page,
          status,
          rateLimit,
          requestId: requestId ?? (page.requestId === null ? null : escapeText(page.requestId, 100)),
          startedAtMs,
          latencyMs,
          bytes: bytes.byteLength,
        };
      }
      const error = statusError(status, headers, text, rateLimit, requestId, hasCursor);
      // An upstream may quote the key it refused: it never reaches a log or last_error.
      error.message = maskSecrets(error.message, [apiKey]);
      throw error;
    },
  };
}

function eventsEndpoint(baseUrl: string): string {
  const expected =
    'DATASYNC_API_URL must be the API base as an absolute http(s) URL without query or fragment, e.g. https://api.example.com/api/v1';
  // The refused value is shown with any user name and password masked: the message reaches terminals and logs.
  if (!isHttpUrl(baseUrl)) {
    throw new ConfigError(`DATASYNC_API_URL "${maskUrl(baseUrl)}" is not an http(s) URL: ${expected}`);
  }
  // An API base with a query, a fragment or credentials in it would be mangled or leak the credentials into logs.
  const u = new URL(baseUrl.trim());
  if (u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') {
    const creds =
      u.username !== '' || u.password !== ''
        ? ' (it carries credentials; the API key goes in DATASYNC_API_KEY)'
        : '';
    throw new ConfigError(`DATASYNC_API_URL "${maskUrl(baseUrl)}" is not usable${creds}: ${expected}`);
  }
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}/events`;
}

/** The three standard headers, with the simulator's fractional reset preferred; null unless all are present and numeric. */
export function parseRateLimit(headers: Headers): RateLimitInfo | null {
  // Each header on its own, capped; a bad one is replaced by the safe value (shared/pacing/rate-limit-headers.ts).
  return readRateLimitHeaders((name) => headers.get(name));
}

function parseErrorBody(text: string): ErrorBody | null {
  try {
    const parsed = errorBodySchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

function statusError(
  status: number,
  headers: Headers,
  text: string,
  rateLimit: RateLimitInfo | null,
  requestId: string | null,
  hasCursor: boolean,
): Error {
  const body = parseErrorBody(text);
  // The upstream's words are escaped: a newline or an ANSI sequence in them must not reach a terminal.
  const said = body ? escapeText(`${body.code ?? body.error}: ${body.message}`) : bodyPreview(text);
  const rid = requestIdNote(requestId);

  if (status === 429) {
    const fromBody = body?.rateLimit
      ? {
          limit: body.rateLimit.limit,
          remaining: body.rateLimit.remaining,
          resetSeconds: body.rateLimit.reset,
        }
      : null;
    const info = rateLimit ?? fromBody ?? undefined;
    // Seconds or an HTTP date, capped (shared/pacing/rate-limit-headers.ts).
    const header = readRetryAfter((name) => headers.get(name), Date.now());
    const retryAfter = capWaitSeconds(
      header?.seconds ?? body?.rateLimit?.retryAfter ?? info?.resetSeconds ?? 1,
      'Retry-After',
    ).seconds;
    return new RateLimitedError(
      `The DataSync API rate-limited the request (HTTP 429${rid}: ${said}); wait ${retryAfter} s before the next request`,
      retryAfter,
      info,
    );
  }
  if (status === 400 && body?.code === 'CURSOR_EXPIRED') {
    return new CursorExpiredError(
      `The DataSync API refused the cursor as expired (${body.message}${rid}): refresh its exp or rebuild it from the stored position`,
    );
  }
  if (status === 400 && body?.code === 'CURSOR_INVALID_FORMAT') {
    return new CursorInvalidError(
      `The DataSync API refused the cursor as malformed (${body.message}${rid}): rebuild it from the stored position`,
    );
  }
  if (status === 401 || status === 403) {
    return new AuthError(
      `The DataSync API refused the API key (HTTP ${status}${rid}: ${said}): check the DATASYNC_API_KEY secret ` +
        '(deployed) or the DATASYNC_API_KEY variable (local runs) holds a valid key',
      status,
    );
  }
  if (status >= 500) {
    const lb = headers.get('server')?.startsWith('awselb') ? ' from the load balancer' : '';
    const maybeCursor =
      status === 502 && hasCursor
        ? '; a 502 to a request with a cursor may also mean the cursor was refused'
        : '';
    return new UpstreamUnavailableError(
      `The DataSync API is unavailable (HTTP ${status}${lb}${rid}: ${said})${maybeCursor}; the request is safe to retry`,
      status,
    );
  }
  return new UpstreamProtocolError(
    `The DataSync API answered HTTP ${status}${rid} (${said}), which the events endpoint does not document: ` +
      'check DATASYNC_API_URL points at the API base (…/api/v1); if it does, the API changed',
    status,
  );
}

function transportError(
  error: unknown,
  timedOut: boolean,
  timeoutMs: number,
  url: URL,
  hasCursor: boolean,
): UpstreamUnavailableError {
  const where = `${url.origin}${url.pathname}${hasCursor ? ' (with cursor)' : ''}`;
  if (timedOut) {
    return new UpstreamUnavailableError(
      `The DataSync API did not answer within ${timeoutMs} ms (${where}); the request is safe to retry, ` +
        'or raise REQUEST_TIMEOUT_MS if pages are this slow',
      undefined,
      { cause: error },
    );
  }
  return new UpstreamUnavailableError(
    `The request to the DataSync API failed (${where}): ${describeCause(error)}; the request is safe to retry, ` +
      'and if it keeps failing check that DATASYNC_API_URL is reachable',
    undefined,
    { cause: error },
  );
}

/** undici reports "fetch failed" / "terminated" and hides the useful part (ECONNRESET, "other side closed") in `cause`. */
function describeCause(error: unknown): string {
  const parts: string[] = [];
  let e: unknown = error;
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    const code = (e as { code?: unknown }).code;
    parts.push(typeof code === 'string' ? `${e.message} (${code})` : e.message);
    e = e.cause;
  }
  return parts.length > 0 ? parts.join(': ') : String(error);
}

function bodyPreview(text: string): string {
  const t = text.trim();
  if (t === '') return 'empty body';
  return `"${escapeText(t, 120)}"`;
}

/** The body passed the byte cap (or its Content-Length said it would). */
class TooLarge extends Error {
  constructor(
    readonly readBytes: number,
    readonly declared: number | null,
    readonly response: Response,
  ) {
    super('response body over the byte cap');
  }
}

/**
 * The body, read chunk by chunk and given up as soon as it passes `cap` bytes (or at once when
 * Content-Length says it will): a 200 MB page or an endless body costs at most `cap` bytes.
 * The bytes counted are the decoded ones, so a compressed body cannot inflate past the cap either.
 */
async function readCapped(response: Response, cap: number): Promise<Uint8Array> {
  const length = response.headers.get('content-length');
  const declared = length !== null && /^\d+$/.test(length.trim()) ? Number(length.trim()) : null;
  if (declared !== null && declared > cap) {
    await response.body?.cancel().catch(() => undefined);
    throw new TooLarge(0, declared, response);
  }
  if (!response.body) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > cap) {
      await reader.cancel().catch(() => undefined);
      throw new TooLarge(total, declared, response);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

function tooLargeError(e: TooLarge, cap: number, hasCursor: boolean): UpstreamUnavailableError {
  const { response } = e;
  const seen =
    e.declared !== null && e.readBytes === 0
      ? `its Content-Length says ${e.declared} bytes`
      : `more than ${e.readBytes - 1} bytes arrived${e.declared === null ? ' (no Content-Length)' : ` (Content-Length said ${e.declared})`}`;
  const rid = response.headers.get('x-request-id');
  return new UpstreamUnavailableError(
    `The events response (HTTP ${response.status}${requestIdNote(rid === null ? null : escapeText(rid, 100))}${hasCursor ? ', with cursor' : ''}) is larger than the client reads: ` +
      `${seen}, over the cap of ${cap} bytes (16 pages of 5000 events at about ${PAGE_BYTES} bytes each). ` +
      'It was not read further; the request is safe to retry, and if every answer is this large the upstream is misbehaving: report it to the API provider',
    response.status,
  );
}

function requestIdNote(requestId: string | null): string {
  return requestId ? `, request id ${requestId}` : '';
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const lenientUtf8 = new TextDecoder('utf-8');

/**
 * UTF-8 text of a body. Bytes that are not UTF-8 become U+FFFD (WHATWG decoding) and the result
 * says so, so that the events that carried them are rejected rather than stored altered.
 */
export function decodeUtf8(bytes: Uint8Array): { text: string; invalidUtf8: boolean } {
  try {
    return { text: strictUtf8.decode(bytes), invalidUtf8: false };
  } catch {
    return { text: lenientUtf8.decode(bytes), invalidUtf8: true };
  }
}

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  AuthError,
  ConfigError,
  CursorExpiredError,
  CursorInvalidError,
  RateLimitedError,
  UpstreamProtocolError,
  UpstreamUnavailableError,
} from '#shared/errors.ts';
import { createDataSyncClient, type DataSyncClient } from '#shared/upstream/client.ts';
import { readFixtureCapture } from '#test/support/captures.ts';

/**
 * A tiny stand-in server on 127.0.0.1: each test sets `respond` to what the upstream does.
 * (Not the project simulator: this pins the client's own mapping of each response.)
 */
type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let respond: Handler;
let requests: IncomingMessage[];
let server: Server;
let baseUrl: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    requests.push(req);
    respond(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  requests = [];
});

const capture = readFixtureCapture('events-limit-10.http');

function json(status: number, body: unknown, headers: Record<string, string> = {}): Handler {
  return (_req, res) => {
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', ...headers });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
}

function client(overrides: Partial<Parameters<typeof createDataSyncClient>[0]> = {}): DataSyncClient {
  return createDataSyncClient({ baseUrl, apiKey: 'test-key', ...overrides });
}

async function failure(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected the request to fail');
}

const rateHeaders = { 'X-RateLimit-Limit': '10', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '46' };

describe('createDataSyncClient', () => {
  it.each([
    ['not a URL', 'not a url'],
    ['a non-http scheme', 'ftp://example.com/api/v1'],
    ['a query string', 'http://127.0.0.1:4010/api/v1?x=1'],
    ['an empty string', ''],
  ])('refuses a base URL that is %s, naming DATASYNC_API_URL', (_label, url) => {
    expect(() => createDataSyncClient({ baseUrl: url, apiKey: 'k' })).toThrow(ConfigError);
    expect(() => createDataSyncClient({ baseUrl: url, apiKey: 'k' })).toThrow(/DATASYNC_API_URL.*\/api\/v1/);
  });

  it('refuses a base URL with credentials without repeating them', () => {
    const url = 'https://admin:hunter22@api.example.com/api/v1';
    const e = (() => {
      try {
        createDataSyncClient({ baseUrl: url, apiKey: 'k' });
      } catch (error) {
        return error as Error;
      }
      throw new Error('expected a ConfigError');
    })();
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain('"https://***:***@api.example.com/api/v1"');
    expect(e.message).toContain('it carries credentials');
    expect(e.message).not.toContain('hunter22');
  });

  it('refuses an empty API key, naming DATASYNC_API_KEY', () => {
    expect(() => createDataSyncClient({ baseUrl, apiKey: '  ' })).toThrow(/DATASYNC_API_KEY/);
  });

  it('refuses a page size that is not a positive whole number', async () => {
    await expect(client().fetchEvents({ limit: 0 })).rejects.toThrow(/PAGE_SIZE/);
    await expect(client().fetchEvents({ limit: 2.5 })).rejects.toBeInstanceOf(ConfigError);
    expect(requests).toHaveLength(0);
  });
});

describe('fetchEvents', () => {
  it('sends GET {base}/events with limit, cursor and the API key, and parses the live page and headers', async () => {
    respond = (_req, res) => {
      const headers = Object.fromEntries(
        Object.entries(capture.headers).filter(([k]) => k !== 'content-length'),
      );
      res.writeHead(200, headers);
      res.end(capture.body);
    };
    const before = Date.now();
    const result = await client({ baseUrl: `${baseUrl}/` }).fetchEvents({ limit: 10, cursor: 'abc+/=' });

    const req = requests[0]!;
    expect(req.method).toBe('GET');
    const url = new URL(req.url!, 'http://x');
    expect(url.pathname).toBe('/api/v1/events');
    expect(url.searchParams.get('limit')).toBe('10');
    expect(url.searchParams.get('cursor')).toBe('abc+/=');
    expect(req.headers['x-api-key']).toBe('test-key');
    expect(req.headers['user-agent']).toBe('datasync-ingest/0.1');

    expect(result.status).toBe(200);
    expect(result.page.data).toHaveLength(10);
    expect(result.page.hasMore).toBe(true);
    expect(result.rateLimit).toEqual({ limit: 10, remaining: 6, resetSeconds: 60 });
    expect(result.requestId).toBe('d2561d25-7008-42ef-a945-9f0583b3f65e');
    expect(result.bytes).toBe(Buffer.byteLength(capture.body));
    expect(result.startedAtMs).toBeGreaterThanOrEqual(before);
    expect(result.latencyMs).toBeGreaterThanOrEqual(0);
  });

  it('omits the cursor on the first page and sends a custom user agent', async () => {
    respond = json(200, { data: [], hasMore: false, nextCursor: null });
    await client({ userAgent: 'probe/1' }).fetchEvents({ limit: 5000, cursor: null });
    const url = new URL(requests[0]!.url!, 'http://x');
    expect(url.searchParams.has('cursor')).toBe(false);
    expect(requests[0]!.headers['user-agent']).toBe('probe/1');
  });

  it('accepts the documented flat body, without rate-limit headers', async () => {
    respond = json(200, { data: [{ id: 1 }], hasMore: false, nextCursor: null });
    const result = await client().fetchEvents({ limit: 10 });
    expect(result.page).toMatchObject({ data: [{ id: 1 }], hasMore: false, nextCursor: null });
    expect(result.rateLimit).toBeNull();
    expect(result.requestId).toBeNull();
  });

  it('prefers the simulator exact reset header and falls back to meta.requestId', async () => {
    respond = json(
      200,
      { data: [], pagination: { hasMore: false, nextCursor: null }, meta: { requestId: 'from-meta' } },
      {
        'X-RateLimit-Limit': '10',
        'X-RateLimit-Remaining': '3',
        'X-RateLimit-Reset': '2',
        'X-RateLimit-Reset-Exact': '1.375',
      },
    );
    const result = await client().fetchEvents({ limit: 10 });
    expect(result.rateLimit).toEqual({ limit: 10, remaining: 3, resetSeconds: 1.375 });
    expect(result.requestId).toBe('from-meta');
  });

  it('keeps the readable rate-limit headers and takes the safe value for a bad or missing one, marked suspect', async () => {
    respond = json(
      200,
      { data: [], hasMore: false },
      { 'X-RateLimit-Limit': '10', 'X-RateLimit-Remaining': '-1', 'X-RateLimit-Reset': '7' },
    );
    const one = (await client().fetchEvents({ limit: 10 })).rateLimit;
    expect(one).toMatchObject({ limit: 10, remaining: 0, resetSeconds: 7 });
    expect(one?.suspect).toMatch(/unreadable x-ratelimit-remaining: "-1".*0 left, reset in 7 s/);
    respond = json(
      200,
      { data: [], hasMore: false },
      { 'X-RateLimit-Limit': '10', 'X-RateLimit-Remaining': 'lots' },
    );
    const two = (await client().fetchEvents({ limit: 10 })).rateLimit;
    expect(two).toMatchObject({ limit: 10, remaining: 0, resetSeconds: 120 });
    expect(two?.suspect).toMatch(/missing X-RateLimit-Reset/);
    respond = json(200, { data: [], hasMore: false }, {});
    expect((await client().fetchEvents({ limit: 10 })).rateLimit).toBeNull();
  });

  it('caps a Reset beyond twice the longest window (120 s), saying so', async () => {
    respond = json(
      200,
      { data: [], hasMore: false },
      { 'X-RateLimit-Limit': '10', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '100000' },
    );
    const rate = (await client().fetchEvents({ limit: 10 })).rateLimit;
    expect(rate).toMatchObject({ limit: 10, remaining: 0, resetSeconds: 120 });
    expect(rate?.suspect).toMatch(/100000 s is beyond the 120 s cap/);
  });

  describe('429', () => {
    const body = {
      error: 'Too Many Requests',
      message: 'Rate limit exceeded. Try again in 46 seconds.',
      code: 'RATE_LIMIT_EXCEEDED',
      rateLimit: { limit: 10, remaining: 0, reset: 46, retryAfter: 46 },
    };

    it('is a RateLimitedError with Retry-After and the headers', async () => {
      respond = json(429, body, { ...rateHeaders, 'Retry-After': '46' });
      const e = await failure(client().fetchEvents({ limit: 10 }));
      expect(e).toBeInstanceOf(RateLimitedError);
      expect((e as RateLimitedError).retryAfterSeconds).toBe(46);
      expect((e as RateLimitedError).rateLimit).toEqual({ limit: 10, remaining: 0, resetSeconds: 46 });
      expect(e.message).toContain('Rate limit exceeded');
    });

    it('reads a Retry-After that is an HTTP date, and caps one too far away', async () => {
      const inTen = new Date(Date.now() + 10_000).toUTCString();
      respond = json(429, body, { ...rateHeaders, 'Retry-After': inTen });
      const e = (await failure(client().fetchEvents({ limit: 10 }))) as RateLimitedError;
      expect(e.retryAfterSeconds).toBeGreaterThan(8);
      expect(e.retryAfterSeconds).toBeLessThanOrEqual(10);
      respond = json(429, body, { ...rateHeaders, 'Retry-After': '100000' });
      expect(
        ((await failure(client().fetchEvents({ limit: 10 }))) as RateLimitedError).retryAfterSeconds,
      ).toBe(120);
    });

    it('prefers Retry-After-Exact', async () => {
      respond = json(429, body, { ...rateHeaders, 'Retry-After': '2', 'Retry-After-Exact': '1.25' });
      expect(
        ((await failure(client().fetchEvents({ limit: 10 }))) as RateLimitedError).retryAfterSeconds,
      ).toBe(1.25);
    });

    it('falls back to the reset header, then to 1 s', async () => {
      respond = json(429, 'Too Many Requests', { ...rateHeaders, 'X-RateLimit-Reset': '7' });
      expect(
        ((await failure(client().fetchEvents({ limit: 10 }))) as RateLimitedError).retryAfterSeconds,
      ).toBe(7);
      respond = json(429, '');
      const bare = (await failure(client().fetchEvents({ limit: 10 }))) as RateLimitedError;
      expect(bare).toBeInstanceOf(RateLimitedError);
      expect(bare.retryAfterSeconds).toBe(1);
      expect(bare.rateLimit).toBeUndefined();
    });

    it('takes the rate limit from the body when the headers are missing', async () => {
      respond = json(429, { ...body, rateLimit: { limit: 10, remaining: 0, reset: 12, retryAfter: 12 } });
      const e = (await failure(client().fetchEvents({ limit: 10 }))) as RateLimitedError;
      expect(e.retryAfterSeconds).toBe(12);
      expect(e.rateLimit).toEqual({ limit: 10, remaining: 0, resetSeconds: 12 });
    });
  });

  it('maps 400 CURSOR_EXPIRED to CursorExpiredError', async () => {
    respond = json(400, {
      error: 'Bad Request',
      message: 'Cursor expired 3 minute(s) ago',
      code: 'CURSOR_EXPIRED',
    });
    const e = await failure(client().fetchEvents({ limit: 10, cursor: 'abc' }));
    expect(e).toBeInstanceOf(CursorExpiredError);
    expect(e.message).toContain('Cursor expired 3 minute(s) ago');
  });

  it('maps 400 CURSOR_INVALID_FORMAT to CursorInvalidError', async () => {
    respond = json(400, {
      error: 'Bad Request',
      message: 'Invalid cursor format',
      code: 'CURSOR_INVALID_FORMAT',
    });
    expect(await failure(client().fetchEvents({ limit: 10, cursor: 'abc' }))).toBeInstanceOf(
      CursorInvalidError,
    );
  });

  it('maps any other 400 and an unknown 4xx to UpstreamProtocolError with the status', async () => {
    respond = json(400, { error: 'Bad Request', message: 'limit must be a number', code: 'INVALID_LIMIT' });
    const e400 = (await failure(client().fetchEvents({ limit: 10 }))) as UpstreamProtocolError;
    expect(e400).toBeInstanceOf(UpstreamProtocolError);
    expect(e400.status).toBe(400);
    expect(e400.message).toContain('INVALID_LIMIT: limit must be a number');

    respond = json(404, {
      error: 'Not Found',
      message: "Event with id 'events' not found",
      code: 'EVENT_NOT_FOUND',
    });
    const e404 = (await failure(client().fetchEvents({ limit: 10 }))) as UpstreamProtocolError;
    expect(e404).toBeInstanceOf(UpstreamProtocolError);
    expect(e404.status).toBe(404);
    expect(e404.message).toContain('DATASYNC_API_URL');
  });

  it.each([401, 403])('maps %i to AuthError naming the API key secret', async (status) => {
    respond = json(status, { error: 'Unauthorized', message: 'Invalid API key', code: 'INVALID_API_KEY' });
    const e = (await failure(client().fetchEvents({ limit: 10 }))) as AuthError;
    expect(e).toBeInstanceOf(AuthError);
    expect(e.status).toBe(status);
    expect(e.message).toContain('DATASYNC_API_KEY');
  });

  it.each([500, 502, 503, 504])('maps %i to UpstreamUnavailableError with the status', async (status) => {
    respond = (_req, res) => {
      res.writeHead(status, { 'Content-Type': 'text/html', Server: 'awselb/2.0' });
      res.end('<html><body>gateway error</body></html>');
    };
    const e = (await failure(client().fetchEvents({ limit: 10 }))) as UpstreamUnavailableError;
    expect(e).toBeInstanceOf(UpstreamUnavailableError);
    expect(e.status).toBe(status);
    expect(e.message).toContain(`HTTP ${status} from the load balancer`);
    expect(e.message).not.toContain('cursor');
  });

  it('flags a 502 to a cursor request as possibly a refused cursor, keeping the status for the caller', async () => {
    respond = json(502, { error: 'Bad Gateway', message: 'upstream error' });
    const e = (await failure(client().fetchEvents({ limit: 10, cursor: 'abc' }))) as UpstreamUnavailableError;
    expect(e).toBeInstanceOf(UpstreamUnavailableError);
    expect(e.status).toBe(502);
    expect(e.message).toContain('may also mean the cursor was refused');
  });

  it('does not follow redirects (the API key must not travel elsewhere)', async () => {
    respond = (_req, res) => {
      res.writeHead(301, { Location: 'http://127.0.0.1:1/elsewhere' });
      res.end();
    };
    const e = (await failure(client().fetchEvents({ limit: 10 }))) as UpstreamProtocolError;
    expect(e).toBeInstanceOf(UpstreamProtocolError);
    expect(e.status).toBe(301);
    expect(requests).toHaveLength(1);
  });

  it('maps a truncated body (connection closed before Content-Length) to UpstreamUnavailableError', async () => {
    respond = (_req, res) => {
      res.writeHead(200, {
        'Content-Type': 'application/json',
        'Content-Length': String(capture.body.length),
      });
      res.write(capture.body.slice(0, 500));
      setTimeout(() => res.destroy(), 10);
    };
    const e = await failure(client().fetchEvents({ limit: 10 }));
    expect(e).toBeInstanceOf(UpstreamUnavailableError);
    expect(e.message).toContain('safe to retry');
  });

  it('maps a complete but truncated JSON body to UpstreamUnavailableError naming the status', async () => {
    respond = json(200, capture.body.slice(0, 500));
    const e = (await failure(client().fetchEvents({ limit: 10 }))) as UpstreamUnavailableError;
    expect(e).toBeInstanceOf(UpstreamUnavailableError);
    expect(e.status).toBe(200);
    expect(e.message).toMatch(/HTTP 200, 500 bytes.*not valid JSON/);
  });

  it('flags a body with bytes that are not UTF-8, and only such a body', async () => {
    const body = JSON.stringify({ data: [{ name: 'PLACEHOLDER' }], hasMore: false, nextCursor: null });
    const [before, after] = body.split('PLACEHOLDER') as [string, string];
    respond = (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8' });
      res.end(
        Buffer.concat([Buffer.from(`${before}a`), Buffer.from([0xff, 0xc3]), Buffer.from(`b${after}`)]),
      );
    };
    const bad = await client().fetchEvents({ limit: 10 });
    expect(bad.page.invalidUtf8).toBe(true);
    expect(bad.page.data).toEqual([{ name: 'a\ufffd\ufffdb' }]);

    // A real U+FFFD, correctly encoded, is data: no flag.
    respond = json(200, { data: [{ name: 'a\ufffdb' }], hasMore: false, nextCursor: null });
    const good = await client().fetchEvents({ limit: 10 });
    expect(good.page.invalidUtf8).toBeUndefined();
    expect(good.page.data).toEqual([{ name: 'a\ufffdb' }]);
  });

  describe('a body over the byte cap', () => {
    it('is refused from its Content-Length, before a byte of it is read, as a transient error', async () => {
      const body = JSON.stringify({ data: [{ pad: 'x'.repeat(5000) }], hasMore: false, nextCursor: null });
      respond = json(200, body, { 'Content-Length': String(Buffer.byteLength(body)) });
      const e = (await failure(
        client({ maxResponseBytes: 1000 }).fetchEvents({ limit: 10 }),
      )) as UpstreamUnavailableError;
      expect(e).toBeInstanceOf(UpstreamUnavailableError);
      expect(e.transient).toBe(true);
      expect(e.message).toMatch(/its Content-Length says 50\d\d bytes, over the cap of 1000 bytes/);
      expect(e.message).toContain('safe to retry');
    });

    it('is cut once the bytes of a body without Content-Length (one that never ends) pass the cap', async () => {
      let closed = false;
      respond = (_req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.write('{"data":[');
        const timer = setInterval(() => res.write(' '.repeat(64 * 1024)), 1);
        res.on('close', () => {
          closed = true;
          clearInterval(timer);
        });
      };
      const cap = 1024 * 1024;
      const e = await failure(client({ maxResponseBytes: cap }).fetchEvents({ limit: 10 }));
      expect(e).toBeInstanceOf(UpstreamUnavailableError);
      expect(e.message).toMatch(
        /more than \d+ bytes arrived \(no Content-Length\), over the cap of 1048576 bytes/,
      );
      await new Promise((r) => setTimeout(r, 50));
      expect(closed).toBe(true);
    });

    it('lets a page at the cap through', async () => {
      const body = JSON.stringify({ data: [], hasMore: false, nextCursor: null });
      respond = json(200, body);
      const r = await client({ maxResponseBytes: Buffer.byteLength(body) }).fetchEvents({ limit: 10 });
      expect(r.page.hasMore).toBe(false);
    });
  });

  it('escapes control characters and ANSI codes of an error message and masks the key it quotes', async () => {
    respond = json(401, {
      error: 'Unauthorized',
      message: "Invalid API key 'test-key'\n\u001b[31mverification: OK\u001b[0m",
      code: 'INVALID_API_KEY',
    });
    const e = await failure(client().fetchEvents({ limit: 10 }));
    expect(e).toBeInstanceOf(AuthError);
    expect(e.message).toContain(
      "INVALID_API_KEY: Invalid API key '***'\\u000a\\u001b[31mverification: OK\\u001b[0m",
    );
    expect(e.message).not.toContain('\u001b');
    expect(e.message).not.toContain('\n');
    expect(e.message).not.toContain('test-key');
  });

  it('marks the events that carry numbers JavaScript cannot read exactly, with their exact text', async () => {
    respond = json(
      200,
      '{"data":[{"id":"a","properties":{"n":1}},{"id":"b","properties":{"n":12345678901234567890}}],"hasMore":false,"nextCursor":null}',
    );
    const r = await client().fetchEvents({ limit: 10 });
    expect(r.page.unexact).toEqual([
      {
        index: 1,
        rawText: '{"id":"b","properties":{"n":12345678901234567890}}',
        reason:
          'number 12345678901234567890 cannot be read exactly (JavaScript reads it as 12345678901234567000): rejected rather than stored altered',
      },
    ]);
    respond = json(200, { data: [{ id: 'a', n: 1769541630123 }], hasMore: false, nextCursor: null });
    expect((await client().fetchEvents({ limit: 10 })).page.unexact).toBeUndefined();
  });

  it('maps a 200 JSON body of the wrong shape to UpstreamProtocolError', async () => {
    respond = json(200, { name: 'DataSync Analytics API', version: 'v1' });
    expect(await failure(client().fetchEvents({ limit: 10 }))).toBeInstanceOf(UpstreamProtocolError);
  });

  it('maps a timeout to UpstreamUnavailableError naming the limit', async () => {
    respond = () => {
      // never answers; the connection is closed by closeAllConnections at the end
    };
    const e = (await failure(
      client({ timeoutMs: 200 }).fetchEvents({ limit: 10 }),
    )) as UpstreamUnavailableError;
    expect(e).toBeInstanceOf(UpstreamUnavailableError);
    expect(e.status).toBeUndefined();
    expect(e.message).toContain('within 200 ms');
  });

  it('times out a body that stalls after the headers', async () => {
    respond = (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write('{"data":[');
    };
    const e = await failure(client({ timeoutMs: 200 }).fetchEvents({ limit: 10 }));
    expect(e).toBeInstanceOf(UpstreamUnavailableError);
    expect(e.message).toContain('within 200 ms');
  });

  it("rethrows the caller's abort reason unchanged", async () => {
    respond = () => {};
    const controller = new AbortController();
    const reason = new Error('shutting down');
    const pending = client().fetchEvents({ limit: 10, signal: controller.signal });
    setTimeout(() => controller.abort(reason), 20);
    expect(await failure(pending)).toBe(reason);
  });

  it('maps a connection reset to UpstreamUnavailableError naming the cause', async () => {
    respond = (req) => {
      req.socket.destroy();
    };
    const e = (await failure(client().fetchEvents({ limit: 10 }))) as UpstreamUnavailableError;
    expect(e).toBeInstanceOf(UpstreamUnavailableError);
    expect(e.status).toBeUndefined();
    expect(e.message).toMatch(/fetch failed: .*(other side closed|ECONNRESET|socket hang up)/i);
  });

  it('maps a refused connection to UpstreamUnavailableError naming ECONNREFUSED', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const e = await failure(
      createDataSyncClient({ baseUrl: `http://127.0.0.1:${port}/api/v1`, apiKey: 'k' }).fetchEvents({
        limit: 10,
      }),
    );
    expect(e).toBeInstanceOf(UpstreamUnavailableError);
    expect(e.message).toContain('ECONNREFUSED');
  });

  it('uses an injected fetch', async () => {
    const calls: string[] = [];
    const fakeFetch = (async (input: string | URL | Request) => {
      calls.push(String(input));
      return new Response(JSON.stringify({ data: [], hasMore: false, nextCursor: null }), { status: 200 });
    }) as typeof fetch;
    const result = await createDataSyncClient({
      baseUrl: 'https://api.example.test/api/v1',
      apiKey: 'k',
      fetch: fakeFetch,
    }).fetchEvents({ limit: 3 });
    expect(calls).toEqual(['https://api.example.test/api/v1/events?limit=3']);
    expect(result.page.hasMore).toBe(false);
  });
});

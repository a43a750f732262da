import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { encodeCursor } from '#shared/cursor.ts';

/** What the hostile upstream answers to one events request. */
export interface HostileResponse {
  status?: number;
  /** Sent as is: a Buffer lets a test send bytes that are not UTF-8. */
  body: string | Buffer;
  headers?: Record<string, string>;
}

export interface HostileRequest {
  cursor: string | null;
  limit: number | null;
  /** 1-based number of this events request. */
  n: number;
}

export interface HostileServer {
  /** API base, e.g. http://127.0.0.1:<port>/api/v1 */
  url: string;
  apiKey: string;
  requests(): HostileRequest[];
  close(): Promise<void>;
}

/**
 * A tiny upstream on 127.0.0.1 that answers `GET /api/v1/events` with whatever the test
 * scripts: crafted pages in the live nested shape, or bytes the real service would never send.
 */
export async function startHostileServer(
  respond: (req: HostileRequest) => HostileResponse,
  opts: { apiKey?: string } = {},
): Promise<HostileServer> {
  const apiKey = opts.apiKey ?? 'hostile-key';
  const seen: HostileRequest[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (u.pathname !== '/api/v1/events') {
      send(res, {
        status: 404,
        body: JSON.stringify({ error: 'Not Found', message: u.pathname, code: 'NOT_FOUND' }),
      });
      return;
    }
    if (req.headers['x-api-key'] !== apiKey) {
      send(res, {
        status: 401,
        body: JSON.stringify({ error: 'Unauthorized', message: 'bad key', code: 'MISSING_API_KEY' }),
      });
      return;
    }
    const limit = u.searchParams.get('limit');
    const r: HostileRequest = {
      cursor: u.searchParams.get('cursor') || null,
      limit: limit === null ? null : Number(limit),
      n: seen.length + 1,
    };
    seen.push(r);
    send(res, respond(r));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/api/v1`,
    apiKey,
    requests: () => [...seen],
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

function send(res: ServerResponse, r: HostileResponse): void {
  const body = typeof r.body === 'string' ? Buffer.from(r.body, 'utf8') : r.body;
  res.writeHead(r.status ?? 200, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(body.length),
    ...r.headers,
  });
  res.end(body);
}

/** A cursor in the live format for a position: what the real service would hand out. */
export function cursorAt(ts: number, id: string, nowMs = Date.now()): string {
  return encodeCursor({ id, ts, v: 2, exp: nowMs + 116_000 });
}

/** A 200 body in the live nested shape. `data` is inserted verbatim when it is a string (pre-serialised JSON). */
export function pageBody(data: unknown[] | string, hasMore: boolean, nextCursor: string | null): string {
  const items = typeof data === 'string' ? data : JSON.stringify(data);
  const returned = typeof data === 'string' ? null : data.length;
  return `{"data":${items},"pagination":{"limit":5000,"hasMore":${hasMore},"nextCursor":${JSON.stringify(nextCursor)},"cursorExpiresIn":116},"meta":{"total":null,"returned":${returned},"requestId":"hostile"}}`;
}

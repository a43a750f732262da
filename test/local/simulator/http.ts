/** Small HTTP helpers for the simulator tests: real requests to a server on 127.0.0.1. */

export interface SimResponse {
  status: number;
  /** Header names lower-cased, in the order received. */
  headers: Record<string, string>;
  text: string;
}

export async function request(
  url: string,
  options: { apiKey?: string | null; method?: 'GET' | 'HEAD' | 'POST' } = {},
): Promise<SimResponse> {
  const headers: Record<string, string> = {};
  const key = options.apiKey === undefined ? 'local-dev-key' : options.apiKey;
  if (key !== null) headers['X-API-Key'] = key;
  const res = await fetch(url, { method: options.method ?? 'GET', headers });
  const out: Record<string, string> = {};
  res.headers.forEach((value, name) => {
    out[name] = value;
  });
  return { status: res.status, headers: out, text: await res.text() };
}

export interface PageBody {
  data: Array<Record<string, unknown>>;
  pagination: { limit: number; hasMore: boolean; nextCursor: string | null; cursorExpiresIn: number };
  meta: { total: number; returned: number; requestId: string };
}

export function eventsUrl(base: string, params: Record<string, string | number> = {}): string {
  const qs = new URLSearchParams(
    Object.entries(params).map(([k, v]): [string, string] => [k, String(v)]),
  ).toString();
  return `${base}/events${qs ? `?${qs}` : ''}`;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Epoch ms of a served timestamp (number of ms, or ISO string). */
export function instantOf(ts: unknown): number {
  if (typeof ts === 'number') return ts;
  if (typeof ts === 'string') return Date.parse(ts);
  throw new Error(`not a timestamp: ${JSON.stringify(ts)}`);
}

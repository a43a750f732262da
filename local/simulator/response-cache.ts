/*
 * The service's response cache (`X-Cache: HIT`, `X-Cache-TTL: 30`): an identical GET within the
 * TTL gets the same body, ETag and request id. A few entries suffice: a client repeats only its
 * latest request.
 */

const CACHE_ENTRIES = 8;

export interface CachedPage {
  body: string;
  etag: string;
  requestId: string;
}

export class ResponseCache {
  private readonly entries = new Map<string, CachedPage & { expiresAt: number }>();

  constructor(private readonly ttlMs: number) {}

  get(key: string, now: number): CachedPage | undefined {
    const hit = this.entries.get(key);
    if (!hit || hit.expiresAt <= now) return undefined;
    return { body: hit.body, etag: hit.etag, requestId: hit.requestId };
  }

  set(key: string, page: CachedPage, now: number): void {
    if (this.ttlMs <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, { ...page, expiresAt: now + this.ttlMs });
    if (this.entries.size > CACHE_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
  }
}

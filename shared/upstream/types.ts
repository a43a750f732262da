import type { RateLimitInfo } from '../errors.ts';
import type { UnexactEvent } from './numbers.ts';

/** The eight event types the service reports. */
export const EVENT_TYPES = [
  'page_view',
  'click',
  'api_call',
  'form_submit',
  'scroll',
  'purchase',
  'error',
  'video_play',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** One event after normalisation: what is written to the `events` table. */
export interface NormalisedEvent {
  id: string;
  sessionId: string;
  userId: string;
  type: string;
  name: string;
  properties: unknown;
  /** The event's instant, epoch milliseconds UTC. */
  occurredAtMs: number;
  deviceType: string | null;
  browser: string | null;
}

/** An event that could not be normalised: kept, with why, in `rejected_events`. */
export interface RejectedEvent {
  raw: unknown;
  reason: string;
  /**
   * The event's exact text when JSON.stringify(raw) would not give it back: a number JavaScript
   * cannot hold (the body's own text), or a value nested too deep to serialise (cut at the depth limit).
   */
  rawText?: string;
}

/** A page in the shape-independent form (the live nested body and the documented flat body both map here). */
export interface EventsPage {
  /** Raw events, not yet validated one by one. */
  data: unknown[];
  hasMore: boolean;
  nextCursor: string | null;
  /** pagination.limit when present. */
  limit: number | null;
  /** meta.total when present. */
  total: number | null;
  /** pagination.cursorExpiresIn (seconds) when present. */
  cursorExpiresIn: number | null;
  requestId: string | null;
  /**
   * The body held bytes that are not UTF-8; they were decoded as U+FFFD. normalisePage then
   * rejects every event that shows a U+FFFD, instead of storing an altered value.
   */
  invalidUtf8?: boolean;
  /** Events carrying a number JavaScript cannot read exactly (numbers.ts): normalisePage rejects them. */
  unexact?: UnexactEvent[];
}

/** What one successful events request gives back. */
export interface FetchPageResult {
  page: EventsPage;
  status: number;
  rateLimit: RateLimitInfo | null;
  /** X-Request-ID header (equals meta.requestId on the live service). */
  requestId: string | null;
  /** Wall-clock instant the request was sent (epoch ms) and how long until the body was read. */
  startedAtMs: number;
  latencyMs: number;
  bytes: number;
}

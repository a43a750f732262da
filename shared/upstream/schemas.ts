import { z } from 'zod';
import { UpstreamProtocolError } from '../errors.ts';
import type { EventsPage } from './types.ts';

/**
 * Response bodies of `GET /api/v1/events`. The live service nests the paging fields under
 * `pagination` and `meta`; its one-page documentation shows them flat. Both are accepted and
 * mapped to the shape-independent {@link EventsPage}. Events stay `unknown` here: one bad event
 * must become one rejected row (see normalise.ts), never a refused page.
 */

// Checked as an array without visiting its 5000 elements (zod would copy the array element by element).
const eventsArray = z.custom<unknown[]>((v) => Array.isArray(v), { error: 'expected an array of events' });

const cursorField = z.string().min(1, { error: 'is an empty string (expected a cursor or null)' }).nullish();

export const nestedEventsBodySchema = z.object({
  data: eventsArray,
  pagination: z.object({
    limit: z.number().int().positive().nullish(),
    hasMore: z.boolean(),
    nextCursor: cursorField,
    cursorExpiresIn: z.number().nonnegative().nullish(),
  }),
  meta: z
    .object({
      total: z.number().int().nonnegative().nullish(),
      returned: z.number().int().nonnegative().nullish(),
      requestId: z.string().nullish(),
    })
    .nullish(),
});

export const flatEventsBodySchema = z.object({
  data: eventsArray,
  hasMore: z.boolean(),
  nextCursor: cursorField,
});

/** The JSON error body the service sends with 4xx (e.g. `CURSOR_EXPIRED`, `RATE_LIMIT_EXCEEDED`). */
export const errorBodySchema = z.object({
  error: z.string(),
  message: z.string(),
  // A load balancer or proxy error may carry the first two fields without a code.
  code: z.string().optional(),
  rateLimit: z
    .object({
      limit: z.number().nonnegative(),
      remaining: z.number().nonnegative(),
      reset: z.number().nonnegative(),
      retryAfter: z.number().nonnegative().optional(),
    })
    .optional(),
});
export type ErrorBody = z.infer<typeof errorBodySchema>;

/**
 * Maps a parsed 200 body to an {@link EventsPage}. Throws {@link UpstreamProtocolError} naming
 * the offending fields when the body is neither shape, or says `hasMore` without a cursor
 * (following such a page is impossible, and treating it as the last page would lose data).
 */
export function parseEventsBody(json: unknown): EventsPage {
  const isNested = typeof json === 'object' && json !== null && 'pagination' in json;
  const page = isNested ? fromNested(json) : fromFlat(json);
  if (page.hasMore && page.nextCursor === null) {
    throw new UpstreamProtocolError(
      'The events response says hasMore=true but carries no nextCursor, so the next page cannot be requested. ' +
        'Nothing was stored for this page; retry later and report it to the API provider if it persists.',
      200,
    );
  }
  return page;
}

function fromNested(json: unknown): EventsPage {
  const parsed = nestedEventsBodySchema.safeParse(json);
  if (!parsed.success) throw shapeError('nested {data, pagination, meta}', parsed.error);
  const { data, pagination, meta } = parsed.data;
  return {
    data,
    hasMore: pagination.hasMore,
    nextCursor: pagination.nextCursor ?? null,
    limit: pagination.limit ?? null,
    total: meta?.total ?? null,
    cursorExpiresIn: pagination.cursorExpiresIn ?? null,
    requestId: meta?.requestId ?? null,
  };
}

function fromFlat(json: unknown): EventsPage {
  const parsed = flatEventsBodySchema.safeParse(json);
  if (!parsed.success) throw shapeError('flat {data, hasMore, nextCursor}', parsed.error);
  const { data, hasMore, nextCursor } = parsed.data;
  return {
    data,
    hasMore,
    nextCursor: nextCursor ?? null,
    limit: null,
    total: null,
    cursorExpiresIn: null,
    requestId: null,
  };
}

function shapeError(shape: string, error: z.ZodError): UpstreamProtocolError {
  const problems = error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(body)'}: ${i.message}`)
    .join('; ');
  return new UpstreamProtocolError(
    `The events response is not the expected ${shape} body (${problems}). ` +
      'Check that DATASYNC_API_URL points at the DataSync API base (…/api/v1); if it does, the API changed its format.',
    200,
  );
}

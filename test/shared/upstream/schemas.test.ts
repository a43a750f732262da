import { describe, expect, it } from 'vitest';
import { UpstreamProtocolError } from '#shared/errors.ts';
import { errorBodySchema, parseEventsBody } from '#shared/upstream/schemas.ts';

const nested = {
  data: [{ id: 'x' }, 'anything'],
  pagination: { limit: 2, hasMore: true, nextCursor: 'eyJpZCI6IngifQ', cursorExpiresIn: 116 },
  meta: { total: 3_000_000, returned: 2, requestId: 'req-1' },
};

function protocolError(body: unknown): UpstreamProtocolError {
  try {
    parseEventsBody(body);
  } catch (error) {
    expect(error).toBeInstanceOf(UpstreamProtocolError);
    return error as UpstreamProtocolError;
  }
  throw new Error('expected parseEventsBody to throw');
}

describe('parseEventsBody', () => {
  it('maps the live nested shape, leaving events unvalidated', () => {
    expect(parseEventsBody(nested)).toEqual({
      data: [{ id: 'x' }, 'anything'],
      hasMore: true,
      nextCursor: 'eyJpZCI6IngifQ',
      limit: 2,
      total: 3_000_000,
      cursorExpiresIn: 116,
      requestId: 'req-1',
    });
  });

  it('maps the documented flat shape', () => {
    expect(parseEventsBody({ data: [], hasMore: true, nextCursor: 'abc' })).toEqual({
      data: [],
      hasMore: true,
      nextCursor: 'abc',
      limit: null,
      total: null,
      cursorExpiresIn: null,
      requestId: null,
    });
  });

  it('accepts the last page: hasMore false with a null or absent cursor, in both shapes', () => {
    expect(parseEventsBody({ data: [], hasMore: false, nextCursor: null }).nextCursor).toBeNull();
    expect(parseEventsBody({ data: [], hasMore: false }).nextCursor).toBeNull();
    const last = parseEventsBody({ data: [], pagination: { limit: 5000, hasMore: false, nextCursor: null } });
    expect(last).toMatchObject({
      hasMore: false,
      nextCursor: null,
      limit: 5000,
      total: null,
      requestId: null,
    });
  });

  it('names the missing field of a nested body', () => {
    const e = protocolError({ data: [], pagination: { limit: 10, nextCursor: null } });
    expect(e.message).toContain('pagination.hasMore');
    expect(e.message).toContain('DATASYNC_API_URL');
  });

  it('names a data field that is not an array', () => {
    expect(protocolError({ data: {}, hasMore: false }).message).toContain(
      'data: expected an array of events',
    );
  });

  it.each([
    ['null', null],
    ['an array', []],
    ['a string', 'ok'],
    ['an object without data', { hasMore: false }],
    ['an empty-string cursor', { data: [], hasMore: true, nextCursor: '' }],
  ])('refuses %s', (_label, body) => {
    protocolError(body);
  });

  it('refuses hasMore=true without a cursor, since the next page could not be requested', () => {
    const e = protocolError({ data: [], pagination: { hasMore: true, nextCursor: null } });
    expect(e.message).toContain('hasMore=true but carries no nextCursor');
    expect(e.status).toBe(200);
  });
});

describe('errorBodySchema', () => {
  it('parses the 429 body of the live service', () => {
    const body = {
      error: 'Too Many Requests',
      message: 'Rate limit exceeded. Try again in 46 seconds.',
      code: 'RATE_LIMIT_EXCEEDED',
      rateLimit: { limit: 10, remaining: 0, reset: 46, retryAfter: 46 },
    };
    expect(errorBodySchema.parse(body)).toEqual(body);
  });

  it('parses a body without code and refuses one without message', () => {
    expect(errorBodySchema.safeParse({ error: 'Bad Gateway', message: 'upstream down' }).success).toBe(true);
    expect(errorBodySchema.safeParse({ error: 'Bad Gateway' }).success).toBe(false);
  });
});

import { z } from 'zod';
import { configDefaults } from './config.ts';
import { CursorInvalidError } from './errors.ts';

/**
 * The DataSync cursor: base64 (or base64url, padded or not) of
 * `{"id":"<last event id>","ts":<last event epoch ms>,"v":2,"exp":<epoch ms>}`.
 * It is not signed, so a client may rewrite `exp` ("cursor refresh"); the server takes the
 * position from `ts` and `id`.
 */
export const cursorPayloadSchema = z.object({
  id: z.string().min(1),
  ts: z.number().int(),
  v: z.number().int(),
  exp: z.number().int(),
});
export type CursorPayload = z.infer<typeof cursorPayloadSchema>;

export const CURSOR_VERSION = 2;

const BASE64ISH = /^[A-Za-z0-9+/_-]+={0,2}$/;

/** Decodes a cursor string. Throws {@link CursorInvalidError} naming what is wrong. */
export function decodeCursor(cursor: string): CursorPayload {
  const trimmed = cursor.trim();
  if (trimmed.length === 0 || !BASE64ISH.test(trimmed)) {
    throw new CursorInvalidError(
      `Cursor ${preview(cursor)} is not base64: pass the exact pagination.nextCursor of the previous page`,
    );
  }
  // Buffer's base64 decoder accepts both alphabets and missing padding.
  const text = Buffer.from(trimmed.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CursorInvalidError(
      `Cursor ${preview(cursor)} does not decode to JSON: pass the exact pagination.nextCursor of the previous page`,
    );
  }
  const parsed = cursorPayloadSchema.safeParse(json);
  if (!parsed.success) {
    throw new CursorInvalidError(
      `Cursor ${preview(cursor)} decodes to JSON without the {id, ts, v, exp} fields (${parsed.error.issues
        .map((i) => i.path.join('.') || i.message)
        .join(', ')}): pass the exact pagination.nextCursor of the previous page`,
    );
  }
  return parsed.data;
}

/** Encodes a cursor as standard padded base64 of its JSON, keys in the live service's order. */
export function encodeCursor(payload: CursorPayload): string {
  const ordered = { id: payload.id, ts: payload.ts, v: payload.v, exp: payload.exp };
  return Buffer.from(JSON.stringify(ordered), 'utf8').toString('base64');
}

/** Rewrites the cursor's expiry to `now + ttlMs` (the server does not sign cursors). */
export function refreshCursor(cursor: string, nowMs: number, ttlMs = configDefaults.cursorTtlMs): string {
  return encodeCursor({ ...decodeCursor(cursor), exp: nowMs + ttlMs });
}

/** Builds a fresh cursor from a stored position (timestamp, id), for when a refreshed cursor is refused. */
export function cursorFromPosition(
  position: { ts: number; id: string },
  nowMs: number,
  ttlMs = configDefaults.cursorTtlMs,
): string {
  return encodeCursor({ id: position.id, ts: position.ts, v: CURSOR_VERSION, exp: nowMs + ttlMs });
}

/** true when the cursor has expired or will within `marginMs`. A cursor that does not decode counts as expiring. */
export function cursorExpiresWithin(cursor: string, nowMs: number, marginMs: number): boolean {
  try {
    return decodeCursor(cursor).exp - nowMs <= marginMs;
  } catch {
    return true;
  }
}

function preview(cursor: string): string {
  const shown = cursor.length > 40 ? `${cursor.slice(0, 40)}…` : cursor;
  return JSON.stringify(shown);
}

import { CURSOR_VERSION, type CursorPayload, decodeCursor, encodeCursor } from '#shared/cursor.ts';
import type { Dataset } from './dataset.ts';
import type { RateDecision } from './rate-limiter.ts';
import { errorReply, type Reply } from './responses.ts';
import type { SimStats } from './stats.ts';

/*
 * The cursor as the service reads it: base64 JSON {id, ts, v, exp}, unsigned, checked for its
 * version and expiry, and resolved to the first position of the page it asks for.
 */

/**
 * How a built cursor is read: one whose id does not name the event at its ts (clients build
 * `{"id":"00000000-0000-0000-0000-000000000000","ts":<ms>,...}` to start a chain at an instant).
 * One public client recorded that the live service resolves such a cursor by `ts`; whether the
 * rows at exactly `ts` are included is not recorded, so the readings differ exactly there:
 *   by-ts       the page starts at the first row at or before ts (rows at ts included);
 *   by-ts-id    strictly after (ts, id) like an issued cursor (with the zero id: rows at ts excluded);
 *   refuse      400 CURSOR_INVALID_FORMAT;
 *   refuse-502  the load balancer's 502, which one observer saw for a bad cursor;
 *   ignore      served from page one, as a service that does not position built cursors would:
 *               the client sees rows newer than the instant it asked for.
 * Issued cursors are always read strictly after (ts, id), so a walk neither skips nor repeats.
 */
export const BUILT_CURSOR_MODES = ['by-ts', 'by-ts-id', 'refuse', 'refuse-502', 'ignore'] as const;
export type BuiltCursorMode = (typeof BUILT_CURSOR_MODES)[number];

export interface CursorOptions {
  dataset: Dataset;
  stats: SimStats;
  /** Refuse cursors whose exp is not the one this server issued for that position. */
  rejectRefreshedCursors: boolean;
  builtCursors: BuiltCursorMode;
  /** Real milliseconds a cursor lives. */
  ttlMs: number;
  /** The time scale, to report an expiry in the client's (unscaled) minutes. */
  scale: number;
}

export interface Cursors {
  /** The index the page starts at, or the error reply for a cursor the service refuses. */
  resolve(param: string, now: number, requestId: string, rate: RateDecision | null): number | Reply;
  /** The nextCursor pointing after the event at `index`, remembered for rejectRefreshedCursors. */
  issue(index: number, now: number): string;
}

export function createCursors(options: CursorOptions): Cursors {
  const { dataset, stats, scale } = options;
  /** exp of every cursor issued, by position: what rejectRefreshedCursors compares against. */
  const issued = new Map<string, number>();

  /** true when the cursor's id is not the event at its ts: the client made it up. */
  function isBuilt(cursor: CursorPayload): boolean {
    const index = dataset.indexOfId(cursor.id);
    return index === null || dataset.timestampAt(index) !== cursor.ts;
  }

  function expired(expMs: number, now: number, requestId: string, rate: RateDecision | null): Reply {
    const minutes = Math.max(1, Math.round(((now - expMs) * scale) / 60_000));
    return errorReply(
      400,
      requestId,
      rate,
      'Bad Request',
      `Cursor expired ${minutes} minute(s) ago`,
      'CURSOR_EXPIRED',
    );
  }

  return {
    resolve(param, now, requestId, rate) {
      const invalidFormat = () =>
        errorReply(400, requestId, rate, 'Bad Request', 'Invalid cursor format', 'CURSOR_INVALID_FORMAT');
      let cursor: CursorPayload;
      try {
        cursor = decodeCursor(param);
        if (cursor.v !== CURSOR_VERSION) throw new Error('version');
      } catch {
        return invalidFormat();
      }
      const built = isBuilt(cursor);
      if (built && options.builtCursors === 'refuse') {
        return invalidFormat();
      }
      if (built && options.builtCursors === 'refuse-502') {
        return { status: 502, requestId, rate, body: '', fromLoadBalancer: true };
      }
      if (options.rejectRefreshedCursors) {
        const issuedExp = issued.get(`${cursor.ts}:${cursor.id}`);
        if (issuedExp !== cursor.exp) {
          stats.faults.refreshedCursorRejected++;
          return expired(Math.min(issuedExp ?? now, now), now, requestId, rate);
        }
      }
      if (cursor.exp < now) return expired(cursor.exp, now, requestId, rate);
      if (built && options.builtCursors === 'by-ts') return dataset.indexAtOrBefore(cursor.ts);
      if (built && options.builtCursors === 'ignore') return 0;
      return dataset.indexAfter(cursor.ts, cursor.id);
    },

    issue(index, now) {
      const ts = dataset.timestampAt(index);
      const id = dataset.idAt(index);
      const exp = now + Math.round(options.ttlMs);
      issued.set(`${ts}:${id}`, exp);
      return encodeCursor({ id, ts, v: CURSOR_VERSION, exp });
    },
  };
}

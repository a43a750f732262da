import { createHash } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import { DataSyncError, type RateLimitInfo } from '../errors.ts';
import type { NormalisedEvent, RejectedEvent } from '../upstream/types.ts';
import { CHECKPOINT_COLUMNS, type Checkpoint, conflict, storable, toCheckpoint } from './checkpoints.ts';
import { type DbLike, sqlOf, withDbErrors } from './client.ts';

export interface PersistPageInput {
  sourceId: string;
  expectedVersion: number;
  owner: string;
  events: NormalisedEvent[];
  rejects: RejectedEvent[];
  /** The cursor the page was requested with (null for the first page): kept with each reject. */
  pageCursor: string | null;
  next: {
    cursor: string | null;
    positionTs: number | null;
    positionId: string | null;
    hasMore: boolean;
    nextRequestAtMs: number;
    rateLimit: RateLimitInfo | null;
    totalReported: number | null;
  };
  requestsMade: number;
  rateLimitedSeen: number;
}

export interface PersistPageResult {
  inserted: number;
  duplicates: number;
  rejectsInserted: number;
  version: number;
  checkpoint: Checkpoint;
}

/**
 * The database refused a row of the page (a value it cannot store): nothing of the page was
 * stored. Fatal: fetching the same page again would fail the same way.
 */
export class PageRejectedByDatabaseError extends DataSyncError {
  override readonly name = 'PageRejectedByDatabaseError';
  readonly transient = false;
}

const countsSchema = z.object({
  expectedVersion: z.number().int().nonnegative(),
  requestsMade: z.number().int().nonnegative(),
  rateLimitedSeen: z.number().int().nonnegative(),
});

/*
 * The page travels as ONE text parameter holding a JSON array, expanded server-side by
 * json_to_recordset. Measured on the 2-core machine for a 5000-event page (bench/persist.ts,
 * numbers in docs/benchmarks.md): one parameter means one bind instead of 50,000, `json`
 * parses faster than `jsonb`, and short keys make the text smaller to send and parse. Instants
 * travel as epoch-ms numbers and are converted in SQL (exact to the millisecond), so the
 * statement does not depend on the client's timestamp serializers, which drizzle replaces.
 */
const INSERT_EVENTS = `
  insert into events (id, session_id, user_id, type, name, properties, occurred_at, device_type, browser, source_id)
  select r.i, r.s, r.u, r.t, r.n, r.p, to_timestamp(r.o / 1000), r.d, r.b, $2
  from json_to_recordset($1::text::json) as r(i uuid, s uuid, u uuid, t text, n text, p jsonb, o float8, d text, b text)
  on conflict (id) do nothing`;

const INSERT_REJECTS = `
  insert into rejected_events (source_id, event_id, reason, raw, raw_hash, page_cursor)
  select $2, r.e, r.r, r.w, r.h, $3
  from json_to_recordset($1::text::json) as r(e text, r text, w text, h text)
  on conflict (source_id, raw_hash) do nothing`;

const ADVANCE = `
  update checkpoints set
    cursor = $3,
    position_ts = case when $4::float8 is null then position_ts else to_timestamp($4::float8 / 1000) end,
    position_id = coalesce($5::text, position_id),
    pages = pages + 1,
    events_inserted = events_inserted + $6::int,
    duplicates_skipped = duplicates_skipped + $7::int,
    rejected = rejected + $8::int,
    requests = requests + $9::int,
    rate_limited = rate_limited + $10::int,
    total_reported = coalesce($11::bigint, total_reported),
    next_request_at = to_timestamp($12::float8 / 1000),
    last_rate_limit = coalesce($13::text::jsonb, last_rate_limit),
    status = case when $14::boolean then 'running' else 'complete' end,
    completed_at = case when $14::boolean then null else now() end,
    version = version + 1,
    updated_at = now()
  where source_id = $1 and version = $2::int and lease_owner = $15
  returning ${CHECKPOINT_COLUMNS}`;

/**
 * Stores one page and moves the checkpoint past it, atomically: the events (ON CONFLICT (id)
 * DO NOTHING), the rejects (once per distinct raw row), and the checkpoint advance, which
 * happens only if the checkpoint is still at `expectedVersion` and leased to `owner`. Otherwise
 * everything rolls back and CheckpointConflictError is thrown. Counts are exact: `inserted` is
 * what the database inserted, `duplicates` the rest of the valid events (already stored, or
 * repeated within the page).
 */
export async function persistPage(db: DbLike, input: PersistPageInput): Promise<PersistPageResult> {
  countsSchema.parse(input);
  const sql = sqlOf(db);
  const eventsJson = encodeEvents(input.events);
  const rejectsJson = input.rejects.length > 0 ? encodeRejects(input.rejects) : null;
  const n = input.next;
  return withDbErrors(sql, () =>
    sql.begin(async (tx) => {
      // Lock the checkpoint first: a competing invocation waits here instead of doing the
      // whole insert only to lose, and a lost race costs no writes.
      const [locked] = await tx<{ version: number; leaseOwner: string | null }[]>`
        select version, lease_owner as "leaseOwner" from checkpoints where source_id = ${input.sourceId} for update`;
      if (!locked || locked.version !== input.expectedVersion || locked.leaseOwner !== input.owner) {
        throw await conflict(tx, input.sourceId, input.expectedVersion, input.owner);
      }
      const inserted =
        input.events.length === 0 ? 0 : await run(tx, INSERT_EVENTS, [eventsJson, input.sourceId], 'events');
      const rejectsInserted =
        rejectsJson === null
          ? 0
          : await run(tx, INSERT_REJECTS, [rejectsJson, input.sourceId, input.pageCursor], 'rejected_events');
      const duplicates = input.events.length - inserted;
      const rows = await tx.unsafe(ADVANCE, [
        input.sourceId,
        input.expectedVersion,
        n.cursor,
        n.positionTs,
        n.positionId,
        inserted,
        duplicates,
        rejectsInserted,
        input.requestsMade,
        input.rateLimitedSeen,
        n.totalReported,
        n.nextRequestAtMs,
        n.rateLimit ? JSON.stringify(n.rateLimit) : null,
        n.hasMore,
        input.owner,
      ]);
      if (!rows[0]) throw await conflict(tx, input.sourceId, input.expectedVersion, input.owner);
      const checkpoint = toCheckpoint(rows[0]);
      return { inserted, duplicates, rejectsInserted, version: checkpoint.version, checkpoint };
    }),
  );
}

async function run(
  tx: TransactionSql,
  text: string,
  params: (string | null)[],
  table: string,
): Promise<number> {
  try {
    const result = await tx.unsafe(text, params, { prepare: true });
    return result.count;
  } catch (error) {
    const e = error as { code?: string; message?: string };
    // Data errors (class 22: bad uuid, NUL in text, value out of range) and constraint errors
    // (class 23) are about a row, not the connection: say so instead of a bare driver message.
    if (typeof e.code === 'string' && (e.code.startsWith('22') || e.code.startsWith('23'))) {
      throw new PageRejectedByDatabaseError(
        `PostgreSQL refused a row of the page while inserting into ${table} (${e.code}: ${e.message}). ` +
          'Nothing of the page was stored and the checkpoint did not move. Such a value must be rejected during ' +
          'normalisation (shared/upstream/normalise.ts) so it lands in rejected_events instead.',
        { cause: error },
      );
    }
    throw error;
  }
}

/** Short keys: the text is built, sent and parsed for every one of millions of rows. */
function encodeEvents(events: NormalisedEvent[]): string {
  const rows = new Array(events.length);
  for (let i = 0; i < events.length; i++) {
    const e = events[i] as NormalisedEvent;
    rows[i] = {
      i: e.id,
      s: e.sessionId,
      u: e.userId,
      t: e.type,
      n: e.name,
      p: e.properties,
      o: e.occurredAtMs,
      d: e.deviceType,
      b: e.browser,
    };
  }
  return JSON.stringify(rows);
}

function encodeRejects(rejects: RejectedEvent[]): string {
  return JSON.stringify(
    rejects.map((r) => {
      const raw = rawText(r.raw);
      return {
        e: rawId(r.raw),
        r: storable(r.reason),
        w: raw,
        h: createHash('sha256').update(raw).digest('hex'),
      };
    }),
  );
}

/** The exact JSON text of the raw event. JSON.stringify escapes NUL and lone surrogates, so text can hold it. */
function rawText(raw: unknown): string {
  try {
    return JSON.stringify(raw) ?? String(raw);
  } catch (error) {
    return `<not serialisable as JSON: ${(error as Error).message}> ${storable(String(raw))}`;
  }
}

function rawId(raw: unknown): string | null {
  if (typeof raw !== 'object' || raw === null || !('id' in raw)) return null;
  const id = (raw as { id: unknown }).id;
  if (id === null || id === undefined) return null;
  const text = typeof id === 'string' ? storable(id) : (rawText(id) ?? null);
  return text.length > 1000 ? `${text.slice(0, 1000)}…` : text;
}

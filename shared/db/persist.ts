import { createHash } from 'node:crypto';
import type { TransactionSql } from 'postgres';
import { z } from 'zod';
import type { PersistPageInput, PersistPageResult } from '../step/contract.ts';
import type { NormalisedEvent, RejectedEvent } from '../upstream/types.ts';
import { checkpointFromDriverRow, storable } from './checkpoints.ts';
import type { Db } from './client.ts';
import { withDbErrors } from './connection-errors.ts';
import { copyIn, EVENT_COPY_COLUMNS, encodeEventsBinary } from './copy-binary.ts';
import { CopyRefusedError, checkpointConflict, NotEncodableError, pageRejected } from './errors.ts';

// The port types live in the step's contract; this module implements the write they describe.
export type { PersistPageInput, PersistPageResult } from '../step/contract.ts';

const countsSchema = z.object({
  expectedVersion: z.number().int().nonnegative(),
  requestsMade: z.number().int().nonnegative(),
  rateLimitedSeen: z.number().int().nonnegative(),
});

/*
 * Events are written by one of two paths, inside the page's transaction:
 *
 * 1. Fast path: the page's distinct events (first occurrence of each id) go in by binary COPY
 *    straight into `events`, inside a savepoint. It succeeds whenever none of the ids is stored
 *    yet, which is every page of a first ingestion. Then `inserted` is the number of distinct
 *    events, exactly: a COPY stores all of its rows or none.
 * 2. When the COPY is refused (an id already stored: a page served again, rows repeated across
 *    pages; or any value the server refuses), the savepoint is rolled back and the page goes
 *    through INSERT ... SELECT FROM json_to_recordset(...) ON CONFLICT (source_id, id) DO NOTHING, whose
 *    row count is exact and whose error, if the server refuses a value, names it.
 *
 * The INSERT path on its own was measured at ~140 ms per 5000-event page on the 2-core machine,
 * the COPY path at ~60 (docs/benchmarks.md). In the INSERT path the page travels as ONE text
 * parameter holding a JSON array with short keys; instants travel as epoch-ms numbers,
 * converted in SQL (exact to the millisecond), so the statement does not depend on the
 * client's timestamp serializers, which drizzle replaces.
 */
const COPY_EVENTS = `copy events (${EVENT_COPY_COLUMNS}) from stdin (format binary)`;

const INSERT_EVENTS = `
  insert into events (id, session_id, user_id, type, name, properties, occurred_at, device_type, browser, source_id)
  select r.i, r.s, r.u, r.t, r.n, r.p, to_timestamp(r.o / 1000), r.d, r.b, $2
  from json_to_recordset($1::text::json) as r(i uuid, s uuid, u uuid, t text, n text, p jsonb, o float8, d text, b text)
  on conflict (source_id, id) do nothing`;

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
    -- $14: the row keeps running (false: this page completes the source).
    status = case when $14::boolean then 'running' else 'complete' end,
    completed_at = case when $14::boolean then null else now() end,
    -- The last page hands the lease back in the same commit: no crash can leave a complete
    -- source leased to a dead execution.
    lease_owner = case when $14::boolean then lease_owner else null end,
    lease_expires_at = case when $14::boolean then lease_expires_at else null end,
    range_done = range_done or $16::boolean,
    version = version + 1,
    updated_at = now()
  where source_id = $1 and version = $2::int and lease_owner = $15
  returning *`;

/**
 * Stores one page and moves the checkpoint past it, atomically: the events (ON CONFLICT (source_id, id)
 * DO NOTHING), the rejects (once per distinct raw row), and the checkpoint advance, which
 * happens only if the checkpoint is still at `expectedVersion` and leased to `owner`. Otherwise
 * everything rolls back and CheckpointConflictError is thrown. Counts are exact: `inserted` is
 * what the database inserted, `duplicates` the rest of the valid events (already stored, or
 * repeated within the page).
 */
export async function persistPage(db: Db, input: PersistPageInput): Promise<PersistPageResult> {
  const sql = db.$client;
  countsSchema.parse(input);
  const distinct = distinctById(input.events);
  const eventsSourceId = input.eventsSourceId ?? input.sourceId;
  const payload = distinct.length === 0 ? null : encodeOrNull(distinct, eventsSourceId);
  const rejectsJson = input.rejects.length > 0 ? encodeRejects(input.rejects) : null;
  const n = input.next;
  return withDbErrors(sql, () =>
    sql.begin(async (tx) => {
      // Lock the checkpoint first: a competing invocation waits here instead of doing the
      // whole insert only to lose, and a lost race costs no writes.
      // `single` is read under the lock too, so it cannot change before ADVANCE.
      const [locked] = await tx<{ version: number; leaseOwner: string | null; single: boolean }[]>`
        select version, lease_owner as "leaseOwner",
          chain_of is null and chain_mode is distinct from 'chains' as single
        from checkpoints where source_id = ${input.sourceId} for update`;
      if (!locked || locked.version !== input.expectedVersion || locked.leaseOwner !== input.owner) {
        throw checkpointConflict(input.sourceId, input.expectedVersion, input.owner, locked);
      }
      // The end of the data completes a one-chain source. On a chain (a chain row, or the source
      // row of a planned multi-chain source) it only ends that chain's range: finishRange
      // completes the source once every range is done.
      const completes = !n.hasMore && locked.single;
      const rangeDone = n.rangeDone === true || (!n.hasMore && !locked.single);
      let writePath: PersistPageResult['writePath'] = 'none';
      let inserted = 0;
      if (distinct.length > 0) {
        if (payload !== null && (await copyEvents(tx, payload))) {
          writePath = 'copy';
          inserted = distinct.length;
        } else {
          writePath = 'insert';
          inserted = await run(tx, INSERT_EVENTS, [encodeEvents(distinct), eventsSourceId], 'events');
        }
      }
      const rejectsInserted =
        rejectsJson === null
          ? 0
          : await run(tx, INSERT_REJECTS, [rejectsJson, eventsSourceId, input.pageCursor], 'rejected_events');
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
        !completes,
        input.owner,
        rangeDone,
      ]);
      // Unreachable while the row stays locked and ADVANCE checks what the lock checked; kept so
      // that a change to either cannot commit a page past a checkpoint it did not hold.
      if (!rows[0]) throw checkpointConflict(input.sourceId, input.expectedVersion, input.owner, locked);
      const checkpoint = checkpointFromDriverRow(rows[0]);
      return { inserted, duplicates, rejectsInserted, version: checkpoint.version, checkpoint, writePath };
    }),
  );
}

/** The first occurrence of each id, in page order (a page may repeat a row). */
function distinctById(events: NormalisedEvent[]): NormalisedEvent[] {
  const seen = new Set<string>();
  const out: NormalisedEvent[] = [];
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    out.push(e);
  }
  return out;
}

function encodeOrNull(events: NormalisedEvent[], sourceId: string): Buffer | null {
  try {
    return encodeEventsBinary(events, sourceId);
  } catch (error) {
    if (error instanceof NotEncodableError) return null;
    throw error;
  }
}

/**
 * The fast path: true when the COPY stored every row, false when the server refused it (the
 * savepoint is rolled back and the transaction goes on). A connection error propagates.
 */
async function copyEvents(tx: TransactionSql, payload: Buffer): Promise<boolean> {
  try {
    await tx.savepoint((sp) => copyIn(sp, COPY_EVENTS, payload));
    return true;
  } catch (error) {
    if (error instanceof CopyRefusedError) return false;
    throw error;
  }
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
    throw pageRejected(error, table);
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

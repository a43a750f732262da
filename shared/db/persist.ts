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

/*
 * A conflicting duplicate: an id of this page the source already holds with different content.
 * Run after the page's insert, so a row this page inserted compares equal to itself. Instants are
 * compared to the millisecond, properties as jsonb (key order does not matter).
 */
const FIND_CONFLICTS = `
  select r.i::text as id, concat_ws(',',
    case when e.session_id is distinct from r.s then 'sessionId' end,
    case when e.user_id is distinct from r.u then 'userId' end,
    case when e.type is distinct from r.t then 'type' end,
    case when e.name is distinct from r.n then 'name' end,
    case when e.properties is distinct from r.p then 'properties' end,
    case when round(extract(epoch from e.occurred_at) * 1000) is distinct from round(r.o::numeric) then 'timestamp' end,
    case when e.device_type is distinct from r.d then 'session.deviceType' end,
    case when e.browser is distinct from r.b then 'session.browser' end) as fields
  from json_to_recordset($1::text::json) as r(i uuid, s uuid, u uuid, t text, n text, p jsonb, o float8, d text, b text)
  join events e on e.id = r.i and e.source_id = $2`;

const INSERT_CONFLICTS = `
  insert into event_conflicts (source_id, event_id, fields, received, received_hash, page_cursor)
  select $2, r.e::uuid, r.f, r.w, r.h, $3
  from json_to_recordset($1::text::json) as r(e text, f text, w text, h text)
  on conflict (source_id, event_id, received_hash) do nothing`;

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
    -- $17: this page was empty with hasMore (the stream-position check counts them in a row).
    empty_pages_in_a_row = case when $17::boolean then empty_pages_in_a_row + 1 else 0 end,
    conflicts = conflicts + $18::int,
    -- A page stored is a success: an error left by an earlier failure no longer describes the row.
    last_error = null,
    late_beyond_lookback = late_beyond_lookback + $19::int,
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
 * repeated within the page), less the rows PostgreSQL refused (`refused`: rejects with the
 * server's reason). `conflicts` counts the duplicates whose content differs from the stored copy
 * (recorded in event_conflicts; the first copy stays).
 */
export async function persistPage(db: Db, input: PersistPageInput): Promise<PersistPageResult> {
  const sql = db.$client;
  countsSchema.parse(input);
  const { distinct, repeats } = distinctById(input.events);
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
          chain_of is null and chain_mode is distinct from 'chains' and topup_floor_ts is null as single
        from checkpoints where source_id = ${input.sourceId} for update`;
      if (!locked || locked.version !== input.expectedVersion || locked.leaseOwner !== input.owner) {
        throw checkpointConflict(input.sourceId, input.expectedVersion, input.owner, locked);
      }
      // The end of the data completes a one-chain source. On a chain (a chain row, or the source
      // row of a planned multi-chain source, or any row of a top-up's walk) it only ends that
      // chain's range: finishRange completes the source once every range is done.
      const completes = !n.hasMore && locked.single;
      const rangeDone = n.rangeDone === true || (!n.hasMore && !locked.single);
      let writePath: PersistPageResult['writePath'] = 'none';
      let inserted = 0;
      let refused: RejectedEvent[] = [];
      const conflicts: Conflict[] = [...repeats];
      if (distinct.length > 0) {
        if (payload !== null && (await copyEvents(tx, payload))) {
          writePath = 'copy';
          inserted = distinct.length;
        } else {
          writePath = 'insert';
          const encoded = encodeEvents(distinct);
          const result = await insertIsolating(tx, encoded.rows, eventsSourceId);
          inserted = result.inserted;
          refused = [...encoded.unencodable, ...result.refused];
          const stored =
            refused.length === 0
              ? encoded.rows
              : encoded.rows.filter((r) => !result.refusedIds.has(r.event.id));
          conflicts.push(...(await findConflicts(tx, stored, eventsSourceId)));
        }
      }
      let rejectsInserted =
        rejectsJson === null
          ? 0
          : await run(tx, INSERT_REJECTS, [rejectsJson, eventsSourceId, input.pageCursor], 'rejected_events');
      if (refused.length > 0) {
        rejectsInserted += await run(
          tx,
          INSERT_REJECTS,
          [encodeRejects(refused), eventsSourceId, input.pageCursor],
          'rejected_events',
        );
      }
      const conflictsInserted =
        conflicts.length === 0
          ? 0
          : await run(
              tx,
              INSERT_CONFLICTS,
              [encodeConflicts(conflicts), eventsSourceId, input.pageCursor],
              'event_conflicts',
            );
      const duplicates = input.events.length - inserted - refused.length;
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
        n.emptyPage === true,
        conflictsInserted,
        n.lateBeyondLookback ?? 0,
      ]);
      // Unreachable while the row stays locked and ADVANCE checks what the lock checked; kept so
      // that a change to either cannot commit a page past a checkpoint it did not hold.
      if (!rows[0]) throw checkpointConflict(input.sourceId, input.expectedVersion, input.owner, locked);
      const checkpoint = checkpointFromDriverRow(rows[0]);
      return {
        inserted,
        duplicates,
        rejectsInserted,
        version: checkpoint.version,
        checkpoint,
        writePath,
        conflicts: conflictsInserted,
        refused: refused.length,
      };
    }),
  );
}

/** A copy of an event that was not stored because the source holds the id with other content. */
interface Conflict {
  event: NormalisedEvent;
  /** The fields that differ, comma-separated. */
  fields: string;
}

/**
 * The first occurrence of each id, in page order (a page may repeat a row), and the repeats
 * whose content differs from that first occurrence (the first copy is the one stored).
 */
function distinctById(events: NormalisedEvent[]): { distinct: NormalisedEvent[]; repeats: Conflict[] } {
  const first = new Map<string, NormalisedEvent>();
  const distinct: NormalisedEvent[] = [];
  const repeats: Conflict[] = [];
  for (const e of events) {
    const kept = first.get(e.id);
    if (kept === undefined) {
      first.set(e.id, e);
      distinct.push(e);
      continue;
    }
    const fields = differingFields(kept, e);
    if (fields.length > 0) repeats.push({ event: e, fields: fields.join(',') });
  }
  return { distinct, repeats };
}

/** The fields of two normalised copies of one event that differ (instants to the millisecond, properties as jsonb compares them). */
function differingFields(a: NormalisedEvent, b: NormalisedEvent): string[] {
  const out: string[] = [];
  if (a.sessionId !== b.sessionId) out.push('sessionId');
  if (a.userId !== b.userId) out.push('userId');
  if (a.type !== b.type) out.push('type');
  if (a.name !== b.name) out.push('name');
  if (!jsonEqual(a.properties, b.properties)) out.push('properties');
  if (a.occurredAtMs !== b.occurredAtMs) out.push('timestamp');
  if (a.deviceType !== b.deviceType) out.push('session.deviceType');
  if (a.browser !== b.browser) out.push('session.browser');
  return out;
}

/** Deep equality of parsed JSON, key order ignored (normalisation bounds the depth). */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  }
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every(
    (k) =>
      Object.hasOwn(b, k) && jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]),
  );
}

async function findConflicts(tx: TransactionSql, rows: EncodedRow[], sourceId: string): Promise<Conflict[]> {
  if (rows.length === 0) return [];
  const found = await tx.unsafe<{ id: string; fields: string }[]>(
    FIND_CONFLICTS,
    [joinRows(rows), sourceId],
    {
      prepare: true,
    },
  );
  if (found.length === 0) return [];
  const byId = new Map(rows.map((r) => [r.event.id, r.event]));
  const out: Conflict[] = [];
  for (const f of found) {
    const event = byId.get(f.id);
    if (event && f.fields !== '') out.push({ event, fields: f.fields });
  }
  return out;
}

function encodeConflicts(conflicts: Conflict[]): string {
  return JSON.stringify(
    conflicts.map((c) => {
      const received = storable(JSON.stringify(c.event));
      return {
        e: c.event.id,
        f: c.fields,
        w: received,
        h: createHash('sha256').update(received).digest('hex'),
      };
    }),
  );
}

/**
 * INSERT ... ON CONFLICT DO NOTHING of the rows, inside a savepoint. When PostgreSQL refuses a
 * value (a data or constraint error), the rows are split in halves and each half tried again,
 * down to the single rows it refuses: those become rejects with the server's own message, and
 * the rest of the page is stored. So no value the server refuses can stick a source on one page.
 */
async function insertIsolating(
  tx: TransactionSql,
  rows: EncodedRow[],
  sourceId: string,
): Promise<{ inserted: number; refused: RejectedEvent[]; refusedIds: Set<string> }> {
  const refused: RejectedEvent[] = [];
  const refusedIds = new Set<string>();
  const attempt = async (part: EncodedRow[]): Promise<number> => {
    try {
      return await tx.savepoint(async (sp) => {
        const result = await sp.unsafe(INSERT_EVENTS, [joinRows(part), sourceId], { prepare: true });
        return result.count;
      });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (typeof code !== 'string' || !(code.startsWith('22') || code.startsWith('23'))) {
        throw pageRejected(error, 'events');
      }
      if (part.length === 1) {
        const row = part[0] as EncodedRow;
        refused.push({
          raw: row.event,
          reason: `PostgreSQL refused the normalised row (${code}: ${(error as Error).message}); raw is the normalised event`,
        });
        refusedIds.add(row.event.id);
        return 0;
      }
      const half = Math.ceil(part.length / 2);
      return (await attempt(part.slice(0, half))) + (await attempt(part.slice(half)));
    }
  };
  const inserted = await attempt(rows);
  return { inserted, refused, refusedIds };
}

/** null: the INSERT path takes the page (a value the encoder cannot represent, or cannot serialise at all). */
function encodeOrNull(events: NormalisedEvent[], sourceId: string): Buffer | null {
  try {
    return encodeEventsBinary(events, sourceId);
  } catch (error) {
    if (error instanceof NotEncodableError || error instanceof RangeError) return null;
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

/** One event as the INSERT path's JSON object (short keys: built, sent and parsed for millions of rows). */
interface EncodedRow {
  event: NormalisedEvent;
  json: string;
}

/**
 * Each event's JSON for json_to_recordset. An event whose JSON cannot be written (normalisation
 * bounds depth and size, so this is defence in depth) becomes a reject instead of failing the page.
 */
function encodeEvents(events: NormalisedEvent[]): { rows: EncodedRow[]; unencodable: RejectedEvent[] } {
  const rows: EncodedRow[] = [];
  const unencodable: RejectedEvent[] = [];
  for (const e of events) {
    try {
      const json = JSON.stringify({
        i: e.id,
        s: e.sessionId,
        u: e.userId,
        t: e.type,
        n: e.name,
        p: e.properties,
        o: e.occurredAtMs,
        d: e.deviceType,
        b: e.browser,
      });
      rows.push({ event: e, json });
    } catch (error) {
      unencodable.push({
        raw: { id: e.id },
        reason: `the event cannot be written as JSON (${(error as Error).message}); only its id is kept`,
      });
    }
  }
  return { rows, unencodable };
}

function joinRows(rows: EncodedRow[]): string {
  return `[${rows.map((r) => r.json).join(',')}]`;
}

function encodeRejects(rejects: RejectedEvent[]): string {
  return JSON.stringify(
    rejects.map((r) => {
      const raw = r.rawText === undefined ? rawText(r.raw) : storable(r.rawText);
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

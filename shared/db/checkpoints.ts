import type { Sql, TransactionSql } from 'postgres';
import { z } from 'zod';
import { CheckpointConflictError, LeaseHeldError } from '../errors.ts';
import { type DbLike, sqlOf, withDbErrors } from './client.ts';
import { CHECKPOINT_STATUSES } from './schema.ts';

const rateLimitSchema = z.object({
  limit: z.number(),
  remaining: z.number(),
  resetSeconds: z.number(),
});

/** A checkpoint row as the rest of the code sees it: instants as epoch ms, counters as numbers. */
export const checkpointSchema = z.object({
  sourceId: z.string(),
  cursor: z.string().nullable(),
  positionTs: z.number().nullable(),
  positionId: z.string().nullable(),
  pages: z.number(),
  eventsInserted: z.number(),
  duplicatesSkipped: z.number(),
  rejected: z.number(),
  requests: z.number(),
  rateLimited: z.number(),
  totalReported: z.number().nullable(),
  nextRequestAtMs: z.number().nullable(),
  lastRateLimit: z
    .string()
    .nullable()
    .transform((v) => (v === null ? null : rateLimitSchema.parse(JSON.parse(v)))),
  status: z.enum(CHECKPOINT_STATUSES),
  lastError: z.string().nullable(),
  leaseOwner: z.string().nullable(),
  leaseExpiresAtMs: z.number().nullable(),
  version: z.number().int(),
  createdAtMs: z.number(),
  updatedAtMs: z.number(),
  completedAtMs: z.number().nullable(),
});
export type Checkpoint = z.infer<typeof checkpointSchema>;

/**
 * The select list every query returns: instants and bigints converted in SQL, so the result
 * does not depend on which parsers the client has (drizzle replaces the timestamptz one).
 */
export const CHECKPOINT_COLUMNS = `
  source_id as "sourceId", cursor, ${ms('position_ts')} as "positionTs", position_id as "positionId",
  pages::float8 as "pages", events_inserted::float8 as "eventsInserted",
  duplicates_skipped::float8 as "duplicatesSkipped", rejected::float8 as "rejected",
  requests::float8 as "requests", rate_limited::float8 as "rateLimited",
  total_reported::float8 as "totalReported", ${ms('next_request_at')} as "nextRequestAtMs",
  last_rate_limit::text as "lastRateLimit", status, last_error as "lastError",
  lease_owner as "leaseOwner", ${ms('lease_expires_at')} as "leaseExpiresAtMs", version,
  ${ms('created_at')} as "createdAtMs", ${ms('updated_at')} as "updatedAtMs",
  ${ms('completed_at')} as "completedAtMs"`;

function ms(column: string): string {
  return `(extract(epoch from ${column}) * 1000)::float8`;
}

export function toCheckpoint(row: unknown): Checkpoint {
  return checkpointSchema.parse(row);
}

/**
 * Takes (or renews) the lease on a source, creating its checkpoint on first use. The lease is
 * granted when it is free, expired, already ours, or held by `handoverFrom` (the finished
 * parent execution this one continues). The version is bumped, so a stale invocation of the
 * same owner (a retried Lambda still running) can no longer commit; the caller uses the
 * returned version for its own write.
 */
export async function acquireLease(
  db: DbLike,
  args: { sourceId: string; owner: string; nowMs: number; ttlMs: number; handoverFrom?: string | null },
): Promise<Checkpoint> {
  const sql = sqlOf(db);
  const { sourceId, owner, nowMs, ttlMs } = args;
  const handoverFrom = args.handoverFrom ?? null;
  return withDbErrors(sql, async () => {
    await sql`insert into checkpoints (source_id) values (${sourceId}) on conflict (source_id) do nothing`;
    const rows = await sql.unsafe(
      `update checkpoints set
         lease_owner = $2,
         lease_expires_at = to_timestamp(($3::float8 + $4::float8) / 1000),
         status = case when status = 'failed' then 'running' else status end,
         version = version + 1,
         updated_at = now()
       where source_id = $1
         and (lease_owner is null
              or lease_owner = $2
              or ($5::text is not null and lease_owner = $5::text)
              or lease_expires_at is null
              or lease_expires_at <= to_timestamp($3::float8 / 1000))
       returning ${CHECKPOINT_COLUMNS}`,
      [sourceId, owner, nowMs, ttlMs, handoverFrom],
    );
    if (rows[0]) return toCheckpoint(rows[0]);
    const current = await getCheckpoint(sql, sourceId);
    const holder = current?.leaseOwner ?? 'another execution';
    const until =
      current?.leaseExpiresAtMs != null
        ? new Date(current.leaseExpiresAtMs).toISOString()
        : 'an unknown time';
    throw new LeaseHeldError(
      `Source "${sourceId}" is being ingested by ${holder}, whose lease expires at ${until}. ` +
        'Wait for that execution to finish (or stop it), or wait until the lease expires, then start this one again.',
    );
  });
}

/** A 429: nothing advances, but the request, the 429 and when to try again are recorded. */
export async function recordRateLimited(
  db: DbLike,
  args: {
    sourceId: string;
    expectedVersion: number;
    nextRequestAtMs: number;
    rateLimit: { limit: number; remaining: number; resetSeconds: number } | null;
    requestsMade?: number;
  },
): Promise<Checkpoint> {
  const sql = sqlOf(db);
  return withDbErrors(sql, async () => {
    const rows = await sql.unsafe(
      `update checkpoints set
         requests = requests + $3::int,
         rate_limited = rate_limited + 1,
         next_request_at = to_timestamp($4::float8 / 1000),
         last_rate_limit = coalesce($5::text::jsonb, last_rate_limit),
         version = version + 1,
         updated_at = now()
       where source_id = $1 and version = $2::int
       returning ${CHECKPOINT_COLUMNS}`,
      [
        args.sourceId,
        args.expectedVersion,
        args.requestsMade ?? 1,
        args.nextRequestAtMs,
        args.rateLimit ? JSON.stringify(args.rateLimit) : null,
      ],
    );
    if (!rows[0]) throw await conflict(sql, args.sourceId, args.expectedVersion, null);
    return toCheckpoint(rows[0]);
  });
}

/** A fatal error ended the execution: the status and the message are left for the operator. */
export async function recordFailure(db: DbLike, args: { sourceId: string; error: string }): Promise<void> {
  const sql = sqlOf(db);
  await withDbErrors(sql, async () => {
    await sql`
      insert into checkpoints (source_id, status, last_error) values (${args.sourceId}, 'failed', ${storable(args.error)})
      on conflict (source_id) do update set
        status = 'failed', last_error = excluded.last_error, version = checkpoints.version + 1, updated_at = now()`;
  });
}

/** Frees the source if `owner` holds it; a lease someone else took over is left alone. */
export async function releaseLease(db: DbLike, args: { sourceId: string; owner: string }): Promise<void> {
  const sql = sqlOf(db);
  await withDbErrors(sql, async () => {
    await sql`
      update checkpoints set lease_owner = null, lease_expires_at = null, updated_at = now()
      where source_id = ${args.sourceId} and lease_owner = ${args.owner}`;
  });
}

/** Forgets a source entirely (its events, rejects and checkpoint) in one transaction. */
export async function resetSource(
  db: DbLike,
  sourceId: string,
): Promise<{ events: number; rejected: number; checkpoints: number }> {
  const sql = sqlOf(db);
  return withDbErrors(sql, () =>
    sql.begin(async (tx) => {
      // Lock the checkpoint first so a concurrent persistPage cannot slip rows in between.
      await tx`select 1 from checkpoints where source_id = ${sourceId} for update`;
      const e = await tx`delete from events where source_id = ${sourceId}`;
      const r = await tx`delete from rejected_events where source_id = ${sourceId}`;
      const c = await tx`delete from checkpoints where source_id = ${sourceId}`;
      return { events: e.count, rejected: r.count, checkpoints: c.count };
    }),
  );
}

export async function getCheckpoint(db: DbLike, sourceId: string): Promise<Checkpoint | null> {
  const sql = sqlOf(db);
  return withDbErrors(sql, async () => {
    const rows = await sql.unsafe(`select ${CHECKPOINT_COLUMNS} from checkpoints where source_id = $1`, [
      sourceId,
    ]);
    return rows[0] ? toCheckpoint(rows[0]) : null;
  });
}

/** Builds the conflict error with what actually moved, so the log says why the write lost. */
export async function conflict(
  sql: Sql | TransactionSql,
  sourceId: string,
  expectedVersion: number,
  owner: string | null,
): Promise<CheckpointConflictError> {
  const [row] = await sql<{ version: number; leaseOwner: string | null }[]>`
    select version, lease_owner as "leaseOwner" from checkpoints where source_id = ${sourceId}`;
  const found = row
    ? `version ${row.version}, lease held by ${row.leaseOwner ?? 'nobody'}`
    : 'no checkpoint row at all';
  const expected = owner
    ? `version ${expectedVersion} with the lease held by ${owner}`
    : `version ${expectedVersion}`;
  return new CheckpointConflictError(
    `Checkpoint of source "${sourceId}" moved under this invocation: expected ${expected}, found ${found}. ` +
      'Another invocation committed first; nothing from this one was stored. Retrying reads the new checkpoint and continues from it.',
  );
}

/** PostgreSQL text cannot hold NUL or lone surrogates; an error message may quote hostile input. */
export function storable(s: string): string {
  return s
    .replaceAll('\u0000', '\\u0000')
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

import { and, asc, eq, getTableColumns, isNull, lte, or, sql } from 'drizzle-orm';
import { z } from 'zod';
import { CHAIN_MODES, type Checkpoint } from '../step/contract.ts';
import { escapeText } from '../upstream/escape.ts';
import type { Db } from './client.ts';
import { withDbErrors } from './connection-errors.ts';
import { checkpointConflict, leaseHeld } from './errors.ts';
import { CHECKPOINT_STATUSES, checkpoints, events, rejectedEvents } from './schema.ts';

/*
 * The checkpoint repository: every read and single-row write of a checkpoint goes through
 * drizzle's query builder, typed by schema.ts. Only the page's own transaction (persist.ts)
 * writes raw SQL, because its COPY is the hot path; it decodes the row it gets back with the
 * same column mapping (checkpointFromDriverRow).
 */

const rateLimitSchema = z.object({
  limit: z.number(),
  remaining: z.number(),
  resetSeconds: z.number(),
  suspect: z.string().optional(),
  rejectedInARow: z.number().optional(),
});

/** A checkpoint row as the rest of the code sees it: instants as epoch ms, counters as numbers. */
// Typed as the step's contract type, so a column that drifts from the port is a type error here.
export const checkpointSchema: z.ZodType<Checkpoint> = z.object({
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
  lastRateLimit: rateLimitSchema.nullable(),
  status: z.enum(CHECKPOINT_STATUSES),
  lastError: z.string().nullable(),
  leaseOwner: z.string().nullable(),
  leaseExpiresAtMs: z.number().nullable(),
  version: z.number().int(),
  createdAtMs: z.number(),
  updatedAtMs: z.number(),
  completedAtMs: z.number().nullable(),
  chainOf: z.string().nullable(),
  chain: z.number().int().nonnegative(),
  rangeHiTs: z.number().nullable(),
  rangeLoTs: z.number().nullable(),
  rangeDone: z.boolean(),
  chainMode: z.enum(CHAIN_MODES).nullable(),
  chainNote: z.string().nullable(),
  chainsPlanned: z.number().int(),
  planOldestTs: z.number().nullable(),
  emptyPagesInARow: z.number().int().nonnegative().optional(),
  conflicts: z.number().int().nonnegative().optional(),
  marks: z
    .object({
      hwmTs: z.number().nullable(),
      hwmId: z.string().nullable(),
      signpostTs: z.number().nullable(),
      signpostId: z.string().nullable(),
      floorTs: z.number().nullable(),
      topupStartedAtMs: z.number().nullable(),
      baseInserted: z.number().nullable(),
      lastTopupAtMs: z.number().nullable(),
      lastTopupInserted: z.number().nullable(),
      topups: z.number(),
      lateBeyondLookback: z.number(),
    })
    .optional(),
});
export type { Checkpoint };

/** The row as drizzle decodes it (Dates, parsed jsonb, bigints as numbers). */
export type CheckpointRow = typeof checkpoints.$inferSelect;

/**
 * The row in the shape the step uses. `last_rate_limit` is untyped jsonb in the table, so it is
 * checked here rather than trusted.
 */
export function toCheckpoint(row: CheckpointRow): Checkpoint {
  const {
    nextRequestAt,
    leaseExpiresAt,
    createdAt,
    updatedAt,
    completedAt,
    positionTs,
    rangeHiTs,
    rangeLoTs,
    planOldestTs,
    // The fallback's resume point is the database layer's own business (chains.ts).
    resumeCursor: _resumeCursor,
    resumePositionTs: _resumePositionTs,
    resumePositionId: _resumePositionId,
    hwmTs,
    hwmId,
    topupSignpostTs,
    topupSignpostId,
    topupFloorTs,
    topupStartedAt,
    topupBaseInserted,
    lastTopupAt,
    lastTopupInserted,
    topups,
    lateBeyondLookback,
    ...rest
  } = row;
  return checkpointSchema.parse({
    ...rest,
    marks: {
      hwmTs: msOrNull(hwmTs),
      hwmId,
      signpostTs: msOrNull(topupSignpostTs),
      signpostId: topupSignpostId,
      floorTs: msOrNull(topupFloorTs),
      topupStartedAtMs: msOrNull(topupStartedAt),
      baseInserted: topupBaseInserted,
      lastTopupAtMs: msOrNull(lastTopupAt),
      lastTopupInserted,
      topups,
      lateBeyondLookback,
    },
    positionTs: msOrNull(positionTs),
    rangeHiTs: msOrNull(rangeHiTs),
    rangeLoTs: msOrNull(rangeLoTs),
    planOldestTs: msOrNull(planOldestTs),
    nextRequestAtMs: msOrNull(nextRequestAt),
    leaseExpiresAtMs: msOrNull(leaseExpiresAt),
    createdAtMs: createdAt.getTime(),
    updatedAtMs: updatedAt.getTime(),
    completedAtMs: msOrNull(completedAt),
  });
}

function msOrNull(d: Date | null): number | null {
  return d === null ? null : d.getTime();
}

const CHECKPOINT_FIELDS = Object.entries(getTableColumns(checkpoints));

/**
 * Decodes a checkpoint row that a raw statement returned (`returning *`, column names as in
 * the table) with drizzle's own column mapping, so raw and drizzle reads cannot disagree.
 */
export function checkpointFromDriverRow(raw: Record<string, unknown>): Checkpoint {
  const row: Record<string, unknown> = {};
  for (const [key, column] of CHECKPOINT_FIELDS) {
    const value = raw[column.name];
    row[key] = value === null || value === undefined ? null : column.mapFromDriverValue(value);
  }
  return toCheckpoint(row as CheckpointRow);
}

const bumpVersion = sql<number>`${checkpoints.version} + 1`;
const now = sql<Date>`now()`;

/**
 * Takes (or renews) the lease on a source, creating its checkpoint on first use. The lease is
 * granted when it is free, expired, already ours, or held by `handoverFrom` (the finished
 * parent execution this one continues). The version is bumped, so a stale invocation of the
 * same owner (a retried Lambda still running) can no longer commit; the caller uses the
 * returned version for its own write.
 */
export async function acquireLease(
  db: Db,
  args: { sourceId: string; owner: string; nowMs: number; ttlMs: number; handoverFrom?: string | null },
): Promise<Checkpoint> {
  const { sourceId, owner, nowMs, ttlMs } = args;
  const handoverFrom = args.handoverFrom ?? null;
  return withDbErrors(db.$client, async () => {
    await db.insert(checkpoints).values({ sourceId }).onConflictDoNothing();
    const [row] = await db
      .update(checkpoints)
      .set({
        leaseOwner: owner,
        leaseExpiresAt: new Date(nowMs + ttlMs),
        status: sql`case when ${checkpoints.status} = 'failed' then 'running' else ${checkpoints.status} end`,
        version: bumpVersion,
        updatedAt: now,
      })
      .where(
        and(
          eq(checkpoints.sourceId, sourceId),
          or(
            isNull(checkpoints.leaseOwner),
            eq(checkpoints.leaseOwner, owner),
            handoverFrom === null ? undefined : eq(checkpoints.leaseOwner, handoverFrom),
            isNull(checkpoints.leaseExpiresAt),
            lte(checkpoints.leaseExpiresAt, new Date(nowMs)),
          ),
        ),
      )
      .returning();
    if (row) return toCheckpoint(row);
    const current = await getCheckpoint(db, sourceId);
    throw leaseHeld(sourceId, current?.leaseOwner ?? null, current?.leaseExpiresAtMs ?? null);
  });
}

/**
 * Requests that stored nothing and drew no 429 are counted all the same. The version is not
 * bumped: a counter moves, no position, so a chain committing under that version is not refused.
 */
export async function addRequests(db: Db, args: { sourceId: string; requests: number }): Promise<void> {
  const n = z.number().int().nonnegative().parse(args.requests);
  if (n === 0) return;
  await withDbErrors(db.$client, async () => {
    await db
      .update(checkpoints)
      .set({ requests: sql`${checkpoints.requests} + ${n}`, updatedAt: now })
      .where(eq(checkpoints.sourceId, args.sourceId));
  });
}

/** A 429: nothing advances, but the request, the 429 and when to try again are recorded. */
export async function recordRateLimited(
  db: Db,
  args: {
    sourceId: string;
    expectedVersion: number;
    nextRequestAtMs: number;
    rateLimit: { limit: number; remaining: number; resetSeconds: number } | null;
    requestsMade?: number;
  },
): Promise<Checkpoint> {
  return withDbErrors(db.$client, async () => {
    const [row] = await db
      .update(checkpoints)
      .set({
        requests: sql`${checkpoints.requests} + ${args.requestsMade ?? 1}`,
        rateLimited: sql`${checkpoints.rateLimited} + 1`,
        nextRequestAt: new Date(args.nextRequestAtMs),
        // A 429 without rate-limit headers keeps what the last response said.
        ...(args.rateLimit ? { lastRateLimit: args.rateLimit } : {}),
        version: bumpVersion,
        updatedAt: now,
      })
      .where(and(eq(checkpoints.sourceId, args.sourceId), eq(checkpoints.version, args.expectedVersion)))
      .returning();
    if (!row) {
      const [found] = await db
        .select({ version: checkpoints.version, leaseOwner: checkpoints.leaseOwner })
        .from(checkpoints)
        .where(eq(checkpoints.sourceId, args.sourceId));
      throw checkpointConflict(args.sourceId, args.expectedVersion, null, found);
    }
    return toCheckpoint(row);
  });
}

/** A fatal error ended the execution: the status and the message are left for the operator. */
export async function recordFailure(db: Db, args: { sourceId: string; error: string }): Promise<void> {
  await withDbErrors(db.$client, async () => {
    await db
      .insert(checkpoints)
      // One line, control characters visible: `ingest status` prints it to a terminal.
      .values({
        sourceId: args.sourceId,
        status: 'failed',
        lastError: storable(escapeText(args.error, 4000)),
      })
      .onConflictDoUpdate({
        target: checkpoints.sourceId,
        set: { status: 'failed', lastError: sql`excluded.last_error`, version: bumpVersion, updatedAt: now },
      });
  });
}

/** Frees the source if `owner` holds it; a lease someone else took over is left alone. */
export async function releaseLease(db: Db, args: { sourceId: string; owner: string }): Promise<void> {
  await withDbErrors(db.$client, async () => {
    await db
      .update(checkpoints)
      .set({ leaseOwner: null, leaseExpiresAt: null, updatedAt: now })
      .where(and(eq(checkpoints.sourceId, args.sourceId), eq(checkpoints.leaseOwner, args.owner)));
  });
}

/** Forgets a source entirely (its events, rejects, checkpoint and chain rows) in one transaction. */
export async function resetSource(
  db: Db,
  sourceId: string,
): Promise<{ events: number; rejected: number; checkpoints: number }> {
  return withDbErrors(db.$client, () =>
    db.transaction(async (tx) => {
      // Lock the checkpoints first (the source row, then its chains in chain order, as every
      // chain operation does) so a concurrent persistPage cannot slip rows in between.
      const ofSource = or(eq(checkpoints.sourceId, sourceId), eq(checkpoints.chainOf, sourceId));
      await tx
        .select({ sourceId: checkpoints.sourceId })
        .from(checkpoints)
        .where(eq(checkpoints.sourceId, sourceId))
        .for('update');
      await tx
        .select({ sourceId: checkpoints.sourceId })
        .from(checkpoints)
        .where(eq(checkpoints.chainOf, sourceId))
        .orderBy(asc(checkpoints.chain))
        .for('update');
      const e = await tx.delete(events).where(eq(events.sourceId, sourceId));
      const r = await tx.delete(rejectedEvents).where(eq(rejectedEvents.sourceId, sourceId));
      const c = await tx.delete(checkpoints).where(ofSource);
      return { events: e.count, rejected: r.count, checkpoints: c.count };
    }),
  );
}

export async function getCheckpoint(db: Db, sourceId: string): Promise<Checkpoint | null> {
  return withDbErrors(db.$client, async () => {
    const [row] = await db.select().from(checkpoints).where(eq(checkpoints.sourceId, sourceId));
    return row ? toCheckpoint(row) : null;
  });
}

/** PostgreSQL text cannot hold NUL or lone surrogates; an error message may quote hostile input. */
export function storable(s: string): string {
  return s
    .replaceAll('\u0000', '\\u0000')
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

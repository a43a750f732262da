import { and, asc, eq, or, sql } from 'drizzle-orm';
import { z } from 'zod';
import { chainKey, ZERO_ID } from '../step/chains.ts';
import {
  CHAIN_MODES,
  type Checkpoint,
  type CreatePlanArgs,
  type FinishRangeArgs,
  type FinishRangeResult,
} from '../step/contract.ts';
import { type CheckpointRow, toCheckpoint } from './checkpoints.ts';
import type { Db } from './client.ts';
import { withDbErrors } from './connection-errors.ts';
import { checkpointConflict, leaseHeld } from './errors.ts';
import { checkpoints } from './schema.ts';
import { clearFloor, topUpCompletion } from './topup.ts';

/*
 * A source's cursor chains: chain 0 is the source's own checkpoint row and the
 * source's header; chain j >= 1 is the row chainKey(sourceId, j) with chain_of = the source.
 * Each function here is one transaction that locks the source row first and then its chain
 * rows in chain order, so any two of them (and resetSource, which locks the same way) queue
 * instead of deadlocking. persistPage locks a single row, so it cannot close a cycle either.
 */

type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];

const ofSource = (sourceId: string) =>
  or(eq(checkpoints.sourceId, sourceId), eq(checkpoints.chainOf, sourceId));

/** The source row then its chain rows, by chain. */
export async function listChains(db: Db, sourceId: string): Promise<Checkpoint[]> {
  return withDbErrors(db.$client, async () => {
    const rows = await db
      .select()
      .from(checkpoints)
      .where(ofSource(sourceId))
      .orderBy(asc(checkpoints.chain));
    return rows.map(toCheckpoint);
  });
}

/**
 * Locks the source row, then its chain rows in chain order. Returns them in that order (the
 * source row first), or null when the source has no row.
 */
async function lockSource(tx: Tx, sourceId: string): Promise<CheckpointRow[] | null> {
  const [source] = await tx
    .select()
    .from(checkpoints)
    .where(eq(checkpoints.sourceId, sourceId))
    .for('update');
  if (!source) return null;
  // The lock is taken as rows leave the sort, so in chain order.
  const chains = await tx
    .select()
    .from(checkpoints)
    .where(eq(checkpoints.chainOf, sourceId))
    .orderBy(asc(checkpoints.chain))
    .for('update');
  return [source, ...chains];
}

function requireLease(key: string, row: CheckpointRow | undefined, owner: string): asserts row {
  if (!row || row.leaseOwner !== owner) {
    throw leaseHeld(key, row?.leaseOwner ?? null, row?.leaseExpiresAt?.getTime() ?? null);
  }
}

const msOrNull = z.number().int().nullable();
const createPlanSchema = z
  .object({
    sourceId: z.string().min(1),
    owner: z.string().min(1),
    mode: z.enum(CHAIN_MODES),
    note: z.string().nullable(),
    oldestTs: msOrNull,
    ranges: z
      .array(z.object({ chain: z.number().int().nonnegative(), hiTs: msOrNull, loTs: msOrNull }))
      .min(1),
    planRequest: z
      .object({
        nextRequestAtMs: z.number(),
        requests: z.number().int().nonnegative().optional(),
        rateLimit: z
          .object({ limit: z.number(), remaining: z.number(), resetSeconds: z.number() })
          .nullable(),
      })
      .optional(),
  })
  .superRefine((plan, ctx) => {
    const issue = (message: string) => ctx.addIssue({ code: 'custom', message, path: ['ranges'] });
    if (plan.mode === 'single' && plan.ranges.length !== 1) issue("mode 'single' plans exactly one range");
    plan.ranges.forEach((r, j) => {
      if (r.chain !== j) issue(`ranges[${j}] is chain ${r.chain}: ranges are chains 0, 1, 2, ... in order`);
      if (j === 0 && r.hiTs !== null) issue('chain 0 starts on page one: its hiTs must be null');
      if (j > 0 && r.hiTs === null) issue(`chain ${j} starts from a built cursor: its hiTs must be set`);
      if (j === plan.ranges.length - 1 && r.loTs !== null)
        issue('the last chain ends at the end of the data: its loTs must be null');
      if (r.hiTs !== null && r.loTs !== null && r.loTs > r.hiTs) issue(`chain ${j}: loTs is above hiTs`);
    });
  });

/**
 * Records the source's plan once: its mode, the chains' ranges (chain rows j >= 1 inserted,
 * each positioned at its range's top with no cursor) and the estimate of the oldest instant.
 * The source row must be leased by `owner`. Idempotent: a source already planned (a replan
 * after continue-as-new, a retried Plan task) keeps its plan, and the current chains are
 * returned. The source row's version is not bumped: no chain is running before the plan.
 */
export async function createPlan(db: Db, args: CreatePlanArgs): Promise<Checkpoint[]> {
  const plan = createPlanSchema.parse(args);
  return withDbErrors(db.$client, () =>
    db.transaction(async (tx) => {
      const rows = await lockSource(tx, plan.sourceId);
      const source = rows?.[0];
      requireLease(plan.sourceId, source, plan.owner);
      if (source.chainMode !== null) return (rows ?? []).map(toCheckpoint);
      const ranges = plan.mode === 'single' ? plan.ranges.slice(0, 1) : plan.ranges;
      const [updated] = await tx
        .update(checkpoints)
        .set({
          chainMode: plan.mode,
          chainNote: plan.note,
          chainsPlanned: ranges.length,
          planOldestTs: dateOrNull(plan.oldestTs),
          rangeLoTs: dateOrNull(ranges[0]?.loTs ?? null),
          // The planning request: counted, and its pacing kept for chain 0's own pacer.
          ...(plan.planRequest
            ? {
                requests: sql`${checkpoints.requests} + ${plan.planRequest.requests ?? 1}`,
                nextRequestAt: new Date(plan.planRequest.nextRequestAtMs),
                ...(plan.planRequest.rateLimit ? { lastRateLimit: plan.planRequest.rateLimit } : {}),
              }
            : {}),
          updatedAt: sql`now()`,
        })
        .where(eq(checkpoints.sourceId, plan.sourceId))
        .returning();
      const inserted =
        ranges.length > 1
          ? await tx
              .insert(checkpoints)
              .values(
                ranges.slice(1).map((r) => ({
                  sourceId: chainKey(plan.sourceId, r.chain),
                  chainOf: plan.sourceId,
                  chain: r.chain,
                  rangeHiTs: dateOrNull(r.hiTs),
                  rangeLoTs: dateOrNull(r.loTs),
                  positionTs: dateOrNull(r.hiTs),
                  positionId: ZERO_ID,
                  cursor: null,
                  status: 'running' as const,
                })),
              )
              .returning()
          : [];
      return [updated as CheckpointRow, ...inserted.sort((a, b) => a.chain - b.chain)].map(toCheckpoint);
    }),
  );
}

/** What is left of an open chain's range, in ms; null when it cannot be told (no low end known). */
function leftOf(row: CheckpointRow, oldest: Date | null, nowMs: number): { lo: number; left: number } | null {
  const lo = (row.rangeLoTs ?? oldest)?.getTime();
  if (lo === undefined) return null;
  const top = row.positionTs?.getTime() ?? row.rangeHiTs?.getTime() ?? nowMs;
  return { lo, left: top - lo };
}

/**
 * Chain `chain` has read its range (its row must be leased by `owner`). It is marked done, and
 * then it takes over the lower half of what is left of the open chain with the most left, if
 * that is at least `minSplitMs`: the other chain's low end moves up to the midpoint (its version
 * is not bumped, so a page it is committing right now still commits), and this chain restarts
 * at the midpoint with no cursor, reading down to the other chain's old low end. Chain 0's
 * contiguous position from the top is kept on the source row the first time it leaves its
 * original range (fallbackToOneChain resumes there). With nothing to take over and every range
 * done, the source is complete and every lease of the source released.
 *
 * Called again for a source that is complete already, it changes nothing and says so
 * (sourceComplete: true): two chains that end at the same time both learn the source is done.
 */
export async function finishRange(db: Db, args: FinishRangeArgs): Promise<FinishRangeResult> {
  const { sourceId, chain, owner, minSplitMs } = args;
  const key = chainKey(sourceId, chain);
  return withDbErrors(db.$client, () =>
    db.transaction(async (tx) => {
      const rows = await lockSource(tx, sourceId);
      const source = rows?.[0];
      if (rows && source?.status === 'complete') {
        return { takeover: null, sourceComplete: true, chains: rows.map(toCheckpoint) };
      }
      const me = rows?.find((r) => r.chain === chain);
      requireLease(key, me, owner);
      if (args.expectedVersion !== undefined && me.version !== args.expectedVersion) {
        throw checkpointConflict(key, args.expectedVersion, owner, me);
      }
      const header = source as CheckpointRow;
      const nowMs = Date.now();
      let best: { row: CheckpointRow; lo: number; left: number } | null = null;
      // Only a planned multi-chain source splits ranges: after a fallback the upstream is not
      // trusted with built cursors.
      if (header.chainMode === 'chains') {
        for (const row of rows ?? []) {
          if (row.rangeDone || row.chain === chain) continue;
          const left = leftOf(row, header.planOldestTs, nowMs);
          if (left && (best === null || left.left > best.left)) best = { row, ...left };
        }
      }
      if (best && best.left >= minSplitMs) {
        const mid = best.lo + Math.floor(best.left / 2);
        const oldLo = best.row.rangeLoTs;
        await tx
          .update(checkpoints)
          .set({ rangeLoTs: new Date(mid), updatedAt: sql`now()` })
          .where(eq(checkpoints.sourceId, best.row.sourceId));
        // Chain 0 leaves its original range (hi null) for the first time: from here on its
        // position no longer says how far the top of the data is stored.
        const resume =
          chain === 0 && header.rangeHiTs === null
            ? {
                resumeCursor: header.cursor,
                resumePositionTs: header.positionTs,
                resumePositionId: header.positionId,
              }
            : {};
        await tx
          .update(checkpoints)
          .set({
            ...resume,
            rangeHiTs: new Date(mid),
            rangeLoTs: oldLo,
            positionTs: new Date(mid),
            positionId: ZERO_ID,
            cursor: null,
            rangeDone: false,
            version: sql`${checkpoints.version} + 1`,
            updatedAt: sql`now()`,
          })
          .where(eq(checkpoints.sourceId, key));
        return {
          takeover: { hiTs: mid, loTs: oldLo?.getTime() ?? null },
          sourceComplete: false,
          chains: await lockedState(tx, sourceId),
        };
      }
      await tx
        .update(checkpoints)
        .set({ rangeDone: true, version: sql`${checkpoints.version} + 1`, updatedAt: sql`now()` })
        .where(eq(checkpoints.sourceId, key));
      const allDone = (rows ?? []).every((r) => r.rangeDone || r.chain === chain);
      if (allDone) {
        // A top-up's walk reached its floor on every range: its signpost becomes the mark in
        // this same commit.
        const inserted = (rows ?? []).reduce((n, r) => n + r.eventsInserted, 0);
        await tx
          .update(checkpoints)
          .set({
            status: 'complete',
            completedAt: sql`now()`,
            // The source is read to the end: an earlier failure's error no longer describes it.
            lastError: null,
            ...topUpCompletion(header, inserted),
            version: sql`${checkpoints.version} + 1`,
            updatedAt: sql`now()`,
          })
          .where(eq(checkpoints.sourceId, sourceId));
        await tx
          .update(checkpoints)
          .set({ leaseOwner: null, leaseExpiresAt: null, ...clearFloor, updatedAt: sql`now()` })
          .where(ofSource(sourceId));
      }
      return { takeover: null, sourceComplete: allDone, chains: await lockedState(tx, sourceId) };
    }),
  );
}

/**
 * The upstream did not honour a built cursor (or served rows outside a range): the source goes
 * on as one chain. Every chain row j >= 1 is closed; the source row reopens to the end of the
 * data from chain 0's contiguous position from the top (the resume point kept when chain 0
 * first left its original range, else its own position), so nothing is skipped. Its version
 * is bumped: an invocation of chain 0 still holding the old range cannot commit. The source
 * row must be leased by `owner`. Idempotent (already in fallback, or complete: nothing changes).
 */
export async function fallbackToOneChain(
  db: Db,
  args: { sourceId: string; owner: string; reason: string },
): Promise<Checkpoint[]> {
  return withDbErrors(db.$client, () =>
    db.transaction(async (tx) => {
      const rows = await lockSource(tx, args.sourceId);
      const source = rows?.[0];
      requireLease(args.sourceId, source, args.owner);
      if (source.chainMode === 'fallback' || source.status === 'complete') {
        return (rows ?? []).map(toCheckpoint);
      }
      await tx
        .update(checkpoints)
        .set({ rangeDone: true, updatedAt: sql`now()` })
        .where(eq(checkpoints.chainOf, args.sourceId));
      // rangeHiTs set = chain 0 left its original range, and the resume point was kept then.
      const resume =
        source.rangeHiTs === null
          ? {}
          : {
              cursor: source.resumeCursor,
              positionTs: source.resumePositionTs,
              positionId: source.resumePositionId,
            };
      await tx
        .update(checkpoints)
        .set({
          chainMode: 'fallback',
          chainNote: args.reason,
          rangeHiTs: null,
          // A top-up's walk still ends at its floor; a backfill reads to the end of the data.
          rangeLoTs: source.topupFloorTs,
          rangeDone: false,
          status: 'running',
          completedAt: null,
          ...resume,
          version: sql`${checkpoints.version} + 1`,
          updatedAt: sql`now()`,
        })
        .where(eq(checkpoints.sourceId, args.sourceId));
      return lockedState(tx, args.sourceId);
    }),
  );
}

/**
 * Extends the source row's lease (never shortens it) while its chains run, without bumping its
 * version: chain 0 may be committing a page under that version right now. LeaseHeldError when
 * someone else holds it (or nobody: the source was completed or taken over).
 */
export async function renewSourceLease(
  db: Db,
  args: { sourceId: string; owner: string; nowMs: number; ttlMs: number },
): Promise<Checkpoint> {
  const until = new Date(args.nowMs + args.ttlMs);
  return withDbErrors(db.$client, async () => {
    const [row] = await db
      .update(checkpoints)
      .set({
        leaseExpiresAt: sql`greatest(${checkpoints.leaseExpiresAt}, ${until.toISOString()}::timestamptz)`,
        updatedAt: sql`now()`,
      })
      .where(and(eq(checkpoints.sourceId, args.sourceId), eq(checkpoints.leaseOwner, args.owner)))
      .returning();
    if (row) return toCheckpoint(row);
    const [current] = await db.select().from(checkpoints).where(eq(checkpoints.sourceId, args.sourceId));
    throw leaseHeld(args.sourceId, current?.leaseOwner ?? null, current?.leaseExpiresAt?.getTime() ?? null);
  });
}

/** The rows as this transaction now sees them (still locked by it). */
async function lockedState(tx: Tx, sourceId: string): Promise<Checkpoint[]> {
  const rows = await tx.select().from(checkpoints).where(ofSource(sourceId)).orderBy(asc(checkpoints.chain));
  return rows.map(toCheckpoint);
}

function dateOrNull(ms: number | null): Date | null {
  return ms === null ? null : new Date(ms);
}

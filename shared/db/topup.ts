import { and, asc, desc, eq, inArray, or, sql } from 'drizzle-orm';
import { chainKey, ZERO_ID } from '../step/chains.ts';
import type { BeginTopUpArgs, Checkpoint } from '../step/contract.ts';
import { type CheckpointRow, toCheckpoint } from './checkpoints.ts';
import type { Db } from './client.ts';
import { withDbErrors } from './connection-errors.ts';
import { checkpointConflict, leaseHeld } from './errors.ts';
import { checkpoints, events } from './schema.ts';

/*
 * The top-up's marks (shared/step/topup.ts). A top-up reopens a complete source in one
 * transaction (beginTopUp): the signpost (page one's newest position), the floor (mark less the
 * lookback) on every row of the walk, the ranges. The walk's pages then commit their rows with
 * their position as any page does (persist.ts); the mark moves to the signpost only in the
 * transaction that completes the source (finishRange, via topUpCompletion), so a walk killed
 * anywhere keeps the old mark and resumes from its last committed position.
 */

const ofSource = (sourceId: string) =>
  or(eq(checkpoints.sourceId, sourceId), eq(checkpoints.chainOf, sourceId));

/** The newest stored event of the source: the mark of a source completed before it had one. */
export async function newestStored(db: Db, sourceId: string): Promise<{ ts: number; id: string } | null> {
  return withDbErrors(db.$client, async () => {
    const [row] = await db
      .select({ ts: events.occurredAt, id: events.id })
      .from(events)
      .where(eq(events.sourceId, sourceId))
      .orderBy(desc(events.occurredAt), desc(events.id))
      .limit(1);
    return row ? { ts: row.ts.getTime(), id: row.id } : null;
  });
}

/** Which of these ids the source has stored (a top-up's page below its floor asks, to count late rows). */
export async function storedIds(db: Db, args: { sourceId: string; ids: string[] }): Promise<Set<string>> {
  if (args.ids.length === 0) return new Set();
  return withDbErrors(db.$client, async () => {
    const rows = await db
      .select({ id: events.id })
      .from(events)
      .where(and(eq(events.sourceId, args.sourceId), inArray(events.id, args.ids)));
    return new Set(rows.map((r) => r.id));
  });
}

/**
 * Reopens a complete source for a top-up. The source row must be leased by `owner`, still at
 * `expectedVersion` and complete; otherwise nothing changes (a retried Plan after a commit sees
 * the source running and resumes it instead). Chain 0 starts again from page one down to its
 * range's low end; chain rows 1..n-1 are (re)positioned at their range's top with no cursor;
 * rows of an earlier plan beyond n stay done.
 */
export async function beginTopUp(db: Db, args: BeginTopUpArgs): Promise<Checkpoint[]> {
  return withDbErrors(db.$client, () =>
    db.transaction(async (tx) => {
      const [source] = await tx
        .select()
        .from(checkpoints)
        .where(eq(checkpoints.sourceId, args.sourceId))
        .for('update');
      const chains = await tx
        .select()
        .from(checkpoints)
        .where(eq(checkpoints.chainOf, args.sourceId))
        .orderBy(asc(checkpoints.chain))
        .for('update');
      if (!source || source.leaseOwner !== args.owner) {
        throw leaseHeld(args.sourceId, source?.leaseOwner ?? null, source?.leaseExpiresAt?.getTime() ?? null);
      }
      if (source.version !== args.expectedVersion) {
        throw checkpointConflict(args.sourceId, args.expectedVersion, args.owner, source);
      }
      if (source.status !== 'complete') return [source, ...chains].map(toCheckpoint);
      const floor = args.floorTs === null ? null : new Date(args.floorTs);
      const inserted = [source, ...chains].reduce((n, r) => n + r.eventsInserted, 0);
      const first = args.ranges[0];
      await tx
        .update(checkpoints)
        .set({
          status: 'running',
          completedAt: null,
          cursor: null,
          positionTs: null,
          positionId: null,
          rangeHiTs: null,
          rangeLoTs: first?.loTs == null ? null : new Date(first.loTs),
          rangeDone: false,
          resumeCursor: null,
          resumePositionTs: null,
          resumePositionId: null,
          chainMode: args.mode,
          chainNote: args.note,
          ...(args.mode === 'chains' ? { chainsPlanned: args.ranges.length, planOldestTs: floor } : {}),
          hwmTs: args.mark === null ? source.hwmTs : new Date(args.mark.ts),
          hwmId: args.mark === null ? source.hwmId : args.mark.id,
          topupSignpostTs: new Date(args.signpost.ts),
          topupSignpostId: args.signpost.id,
          topupFloorTs: floor,
          topupStartedAt: sql`now()`,
          topupBaseInserted: inserted,
          version: sql`${checkpoints.version} + 1`,
          updatedAt: sql`now()`,
        })
        .where(eq(checkpoints.sourceId, args.sourceId));
      const existing = new Set(chains.map((c) => c.chain));
      for (const r of args.ranges.slice(1)) {
        const values = {
          rangeHiTs: r.hiTs === null ? null : new Date(r.hiTs),
          rangeLoTs: r.loTs === null ? null : new Date(r.loTs),
          positionTs: r.hiTs === null ? null : new Date(r.hiTs),
          positionId: ZERO_ID,
          cursor: null,
          rangeDone: false,
          status: 'running' as const,
          completedAt: null,
          leaseOwner: null,
          leaseExpiresAt: null,
          topupFloorTs: floor,
          updatedAt: sql`now()`,
        };
        if (existing.has(r.chain)) {
          await tx
            .update(checkpoints)
            .set({ ...values, version: sql`${checkpoints.version} + 1` })
            .where(eq(checkpoints.sourceId, chainKey(args.sourceId, r.chain)));
        } else {
          await tx.insert(checkpoints).values({
            sourceId: chainKey(args.sourceId, r.chain),
            chainOf: args.sourceId,
            chain: r.chain,
            ...values,
          });
        }
      }
      const rows = await tx
        .select()
        .from(checkpoints)
        .where(ofSource(args.sourceId))
        .orderBy(asc(checkpoints.chain));
      return rows.map(toCheckpoint);
    }),
  );
}

/**
 * What the transaction that completes a source also writes on its row when a top-up ran: the
 * signpost becomes the mark, and the top-up's count of new rows is kept. `inserted` is the
 * source's inserted count over its rows now. Empty for a backfill (no signpost).
 */
export function topUpCompletion(source: CheckpointRow, inserted: number) {
  if (source.topupSignpostTs === null) return {};
  return {
    hwmTs: source.topupSignpostTs,
    hwmId: source.topupSignpostId,
    topupSignpostTs: null,
    topupSignpostId: null,
    lastTopupAt: sql`now()`,
    lastTopupInserted: Math.max(0, inserted - (source.topupBaseInserted ?? inserted)),
    topups: sql`${checkpoints.topups} + 1`,
  };
}

/** The walk is over: no row of the source keeps the floor (so a later write is a backfill's again). */
export const clearFloor = { topupFloorTs: null } as const;

import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uuid,
} from 'drizzle-orm/pg-core';
import type { RateLimitInfo } from '../errors.ts';
import { CHAIN_MODES } from '../step/contract.ts';

/*
 * The database schema. drizzle-kit generates the SQL migrations in drizzle/ from this file
 * (`npx drizzle-kit generate`), and it types the checkpoint repository's queries
 * (checkpoints.ts). The page's transaction (persist.ts) writes events by binary COPY, which
 * no query builder expresses.
 */

/**
 * One row per upstream event of a source. Deliberately lean: only the primary key is indexed,
 * because the write volume (millions of rows through ON CONFLICT) is what this table costs. The
 * key is (source_id, id): two sources fed the same ids (two simulator runs of one seed, a test
 * copy of a real source) each keep their own rows, and a page fetched twice for one source
 * stores nothing twice.
 */
export const events = pgTable(
  'events',
  {
    id: uuid('id').notNull(),
    sessionId: uuid('session_id'),
    userId: uuid('user_id'),
    type: text('type'),
    name: text('name'),
    properties: jsonb('properties'),
    occurredAt: timestamp('occurred_at', { withTimezone: true, mode: 'date' }).notNull(),
    deviceType: text('device_type'),
    browser: text('browser'),
    sourceId: text('source_id').notNull(),
    ingestedAt: timestamp('ingested_at', { withTimezone: true, mode: 'date' }).defaultNow(),
  },
  (t) => [primaryKey({ name: 'events_source_id_id_pk', columns: [t.sourceId, t.id] })],
);

export const CHECKPOINT_STATUSES = ['running', 'complete', 'failed'] as const;
/** How a source is read: one chain, several chains over ranges of instants, or back to one after a refusal. */

/**
 * The resumable state of one cursor chain: where it is, what it did, and who may move it. A
 * source's own row is its chain 0 and also the source's header (plan, mode, completion); chain
 * j >= 1 is the row `<sourceId>~<j>` (shared/step/chains.ts chainKey) with `chain_of` = the
 * source, so lease, version, counters and persistPage work per chain unchanged.
 */
export const checkpoints = pgTable(
  'checkpoints',
  {
    sourceId: text('source_id').primaryKey().default('default'),
    cursor: text('cursor'),
    /** The (timestamp, id) the cursor encodes: a refused cursor can be rebuilt from it. */
    positionTs: timestamp('position_ts', { withTimezone: true, mode: 'date' }),
    positionId: text('position_id'),
    pages: bigint('pages', { mode: 'number' }).notNull().default(0),
    eventsInserted: bigint('events_inserted', { mode: 'number' }).notNull().default(0),
    duplicatesSkipped: bigint('duplicates_skipped', { mode: 'number' }).notNull().default(0),
    rejected: bigint('rejected', { mode: 'number' }).notNull().default(0),
    requests: bigint('requests', { mode: 'number' }).notNull().default(0),
    rateLimited: bigint('rate_limited', { mode: 'number' }).notNull().default(0),
    /** meta.total of the last page, when the upstream sends it. */
    totalReported: bigint('total_reported', { mode: 'number' }),
    /** Earliest instant the next request may be sent (pacing survives restarts). */
    nextRequestAt: timestamp('next_request_at', { withTimezone: true, mode: 'date' }),
    /** The rate-limit headers of the last response that had them. */
    lastRateLimit: jsonb('last_rate_limit').$type<RateLimitInfo>(),
    status: text('status', { enum: CHECKPOINT_STATUSES }).notNull().default('running'),
    lastError: text('last_error'),
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: timestamp('lease_expires_at', { withTimezone: true, mode: 'date' }),
    /** Optimistic concurrency: every write that moves the source bumps it. */
    version: integer('version').notNull().default(0),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    completedAt: timestamp('completed_at', { withTimezone: true, mode: 'date' }),
    /** The source a chain row j >= 1 belongs to; null on the source's own row (chain 0). */
    chainOf: text('chain_of'),
    chain: integer('chain').notNull().default(0),
    /** The chain's range of instants, both ends inclusive: null hi = from page one, null lo = to the end. */
    rangeHiTs: timestamp('range_hi_ts', { withTimezone: true, mode: 'date' }),
    rangeLoTs: timestamp('range_lo_ts', { withTimezone: true, mode: 'date' }),
    /** The chain has nothing left in its range right now (it may take over part of another). */
    rangeDone: boolean('range_done').notNull().default(false),
    // The source's own row only, from here on.
    /** null until the source is planned. */
    chainMode: text('chain_mode', { enum: CHAIN_MODES }),
    /** Why the source runs as one chain, or why it fell back to one. */
    chainNote: text('chain_note'),
    chainsPlanned: integer('chains_planned').notNull().default(1),
    /** The plan's estimate of the oldest instant: the low end of a range whose lo is null. */
    planOldestTs: timestamp('plan_oldest_ts', { withTimezone: true, mode: 'date' }),
    /**
     * Chain 0's position contiguous from the top, saved when it first leaves its original range:
     * a fallback to one chain goes on from here, exact.
     */
    resumeCursor: text('resume_cursor'),
    resumePositionTs: timestamp('resume_position_ts', { withTimezone: true, mode: 'date' }),
    resumePositionId: text('resume_position_id'),
    /**
     * Pages in a row, up to this chain's position, that came back empty with hasMore: true. Kept
     * here so a resume keeps counting (shared/step/position.ts stops at MAX_EMPTY_PAGES_IN_A_ROW).
     */
    emptyPagesInARow: integer('empty_pages_in_a_row').notNull().default(0),
    /** Conflicting duplicates this chain met: an id stored already, sent again with other content (`event_conflicts`). */
    conflicts: bigint('conflicts', { mode: 'number' }).notNull().default(0),
    // Top-ups (shared/step/topup.ts, drizzle/0004_topup.sql).
    /** Source row: the high-water mark. Everything at or below it that the upstream held when the walk that set it started is stored, but for late arrivals (the lookback's business). */
    hwmTs: timestamp('hwm_ts', { withTimezone: true, mode: 'date' }),
    hwmId: text('hwm_id'),
    /** Source row, while a top-up runs: the newest position it saw on page one; the next mark once the walk reaches the floor. */
    topupSignpostTs: timestamp('topup_signpost_ts', { withTimezone: true, mode: 'date' }),
    topupSignpostId: text('topup_signpost_id'),
    /** Every row of a running top-up: the walk's floor, mark less the lookback (the range ending there ends the walk). */
    topupFloorTs: timestamp('topup_floor_ts', { withTimezone: true, mode: 'date' }),
    /** Source row: when the running top-up was planned, and the source's inserted count then. */
    topupStartedAt: timestamp('topup_started_at', { withTimezone: true, mode: 'date' }),
    topupBaseInserted: bigint('topup_base_inserted', { mode: 'number' }),
    /** Source row: the last completed top-up, its new rows, and how many have completed. */
    lastTopupAt: timestamp('last_topup_at', { withTimezone: true, mode: 'date' }),
    lastTopupInserted: bigint('last_topup_inserted', { mode: 'number' }),
    topups: bigint('topups', { mode: 'number' }).notNull().default(0),
    /** Rows stored by a top-up below its floor (late beyond the lookback): stored, and counted here. */
    lateBeyondLookback: bigint('late_beyond_lookback', { mode: 'number' }).notNull().default(0),
  },
  (t) => [
    check('checkpoints_status_check', sql`${t.status} in ('running', 'complete', 'failed')`),
    check(
      'checkpoints_chain_mode_check',
      sql`${t.chainMode} is null or ${t.chainMode} in ('single', 'chains', 'fallback')`,
    ),
    index('checkpoints_chain_of_idx').on(t.chainOf),
  ],
);

/**
 * Events that could not be normalised, kept with the reason. `raw` is the exact JSON text of
 * the raw event: text rather than jsonb because hostile input may hold what jsonb refuses
 * (JSON.stringify escapes a NUL as \u0000, which text stores fine). The same rejected row served
 * twice (pages repeat rows) is stored once thanks to (source_id, raw_hash).
 */
export const rejectedEvents = pgTable(
  'rejected_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    sourceId: text('source_id').notNull(),
    eventId: text('event_id'),
    reason: text('reason').notNull(),
    raw: text('raw').notNull(),
    /** sha256 hex of `raw`. */
    rawHash: text('raw_hash').notNull(),
    pageCursor: text('page_cursor'),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [unique('rejected_events_source_raw_hash_key').on(t.sourceId, t.rawHash)],
);

/**
 * The shared request pacer (shared/db/pacer.ts): one row per upstream key. Every request of
 * every cursor chain reserves its start here under the row's lock. `state` is the pure model's
 * state (shared/pacing/shared-pacer.ts: reserved starts, learned window, header delay, probe); the
 * other columns repeat what an operator wants to read without parsing it.
 */
export const pacers = pgTable('pacers', {
  key: text('key').primaryKey(),
  state: jsonb('state').notNull(),
  /** Earliest next start by the spacing. */
  nextAt: timestamp('next_at', { withTimezone: true, mode: 'date' }),
  /** The learned window (upper bound, ms) and header delay (ms; null = Reset counted from the answer). */
  windowMs: integer('window_ms'),
  headerDelayMs: integer('header_delay_ms'),
  updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
});

/**
 * What each source was ingested from, as the local runner records it when it starts a source:
 * a run whose options describe another data set is refused (SourceMismatchError) instead of
 * mixing the two or starting the source over. `upstream` is a canonical key compared as text
 * (`simulator events=3000000 seed=1 chaos=false`, or the API's base URL); `description` is what
 * the refusal prints. A source the deployed pipeline started has no row here.
 */
export const sourceDatasets = pgTable('source_datasets', {
  sourceId: text('source_id').primaryKey(),
  upstream: text('upstream').notNull(),
  description: text('description').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
});

/**
 * Conflicting duplicates: an event id the source already holds (stored earlier, or earlier in the
 * same page) sent again with different content. The first copy stays in `events`; each other
 * copy is kept here once (raw_hash), with the fields that differ, so `verified` cannot be true
 * while the upstream contradicted itself.
 */
export const eventConflicts = pgTable(
  'event_conflicts',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    sourceId: text('source_id').notNull(),
    eventId: uuid('event_id').notNull(),
    /** The fields whose values differ from the stored copy, comma-separated. */
    fields: text('fields').notNull(),
    /** The copy that was not stored, as normalised (JSON text). */
    received: text('received').notNull(),
    /** sha256 hex of `received`. */
    receivedHash: text('received_hash').notNull(),
    pageCursor: text('page_cursor'),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [unique('event_conflicts_source_event_hash_key').on(t.sourceId, t.eventId, t.receivedHash)],
);

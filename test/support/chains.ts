import type { Checkpoint } from '#shared/step/index.ts';

/*
 * A source read by three chains, as plain checkpoint rows (the views are pure functions of the
 * rows, so their tests need no database): the source's own row (chain 0, the header) and the
 * rows `default~1`, `default~2`.
 */

export const T0 = Date.UTC(2026, 1, 20, 12, 0, 0);
export const DAY = 86_400_000;

export function row(overrides: Partial<Checkpoint> = {}): Checkpoint {
  return {
    sourceId: 'default',
    cursor: null,
    positionTs: null,
    positionId: null,
    pages: 0,
    eventsInserted: 0,
    duplicatesSkipped: 0,
    rejected: 0,
    requests: 0,
    rateLimited: 0,
    totalReported: null,
    nextRequestAtMs: null,
    lastRateLimit: null,
    status: 'running',
    lastError: null,
    leaseOwner: null,
    leaseExpiresAtMs: null,
    version: 1,
    createdAtMs: T0 - DAY,
    updatedAtMs: T0,
    completedAtMs: null,
    chainOf: null,
    chain: 0,
    rangeHiTs: null,
    rangeLoTs: null,
    rangeDone: false,
    chainMode: null,
    chainNote: null,
    chainsPlanned: 1,
    planOldestTs: null,
    ...overrides,
  };
}

export const OWNER = 'arn:aws:states:us-east-1:123456789012:execution:datasync-ingest:default-1';
const leased = { leaseOwner: OWNER, leaseExpiresAtMs: T0 + 60_000 };

/** Mid-run: chain 0 and 1 reading, chain 2 done with its range. */
export function threeChains(): Checkpoint[] {
  return [
    row({
      ...leased,
      chainMode: 'chains',
      chainNote: '3 chains: the first page took 3500 ms, one request may start every 2200 ms',
      chainsPlanned: 3,
      planOldestTs: T0 - 30 * DAY,
      rangeLoTs: T0 - 10 * DAY,
      positionTs: T0 - 4 * DAY,
      pages: 120,
      eventsInserted: 600_000,
      duplicatesSkipped: 0,
      rejected: 3,
      requests: 121,
      rateLimited: 0,
      totalReported: 3_000_000,
      lastRateLimit: { limit: 10, remaining: 4, resetSeconds: 12 },
      nextRequestAtMs: T0 + 2200,
      updatedAtMs: T0 - 3000,
    }),
    row({
      ...leased,
      sourceId: 'default~1',
      chainOf: 'default',
      chain: 1,
      rangeHiTs: T0 - 10 * DAY,
      rangeLoTs: T0 - 20 * DAY,
      positionTs: T0 - 14 * DAY,
      pages: 98,
      eventsInserted: 489_998,
      duplicatesSkipped: 2,
      rejected: 1,
      requests: 99,
      rateLimited: 1,
      lastRateLimit: { limit: 10, remaining: 3, resetSeconds: 11 },
      nextRequestAtMs: T0 + 1100,
      updatedAtMs: T0 - 1000,
    }),
    row({
      sourceId: 'default~2',
      chainOf: 'default',
      chain: 2,
      rangeHiTs: T0 - 20 * DAY,
      rangeLoTs: null,
      positionTs: T0 - 31 * DAY,
      pages: 42,
      eventsInserted: 210_000,
      duplicatesSkipped: 5,
      rejected: 0,
      requests: 43,
      rateLimited: 0,
      rangeDone: true,
      // A finished chain keeps its last pacing instant: it must not be "the next request".
      nextRequestAtMs: T0 - 5000,
      updatedAtMs: T0 - 2000,
    }),
  ];
}

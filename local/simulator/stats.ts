/** What the simulator counts, served at /__sim/stats and by RunningSimulator.stats(). */
export interface SimStats {
  /** Every request the server answered, /__sim/stats excluded. */
  requests: number;
  byStatus: Record<string, number>;
  ok: number;
  rateLimited: number;
  cacheHits: number;
  /** 200 responses of /api/v1/events (HEAD included). */
  pages: number;
  /** Rows sent in 200 bodies (duplicates included). */
  eventsServed: number;
  faults: {
    transientError: number;
    truncatedBody: number;
    /** Pages that repeated rows from before their cursor, and how many rows that was. */
    duplicatePages: number;
    duplicateRows: number;
    malformedTimestamp: number;
    missingField: number;
    epochSeconds: number;
    controlChar: number;
    deepProperties: number;
    unexactNumber: number;
    unknownType: number;
    /** Request faults of an upstream that misbehaves on purpose (request-faults.ts). */
    backCursor: number;
    sidewaysCursor: number;
    emptyPage: number;
    conflictingDuplicate: number;
    oversizeBody: number;
    endlessBody: number;
    hostileError: number;
    refreshedCursorRejected: number;
    latencyMsTotal: number;
  };
}

export function emptyStats(): SimStats {
  return {
    requests: 0,
    byStatus: {},
    ok: 0,
    rateLimited: 0,
    cacheHits: 0,
    pages: 0,
    eventsServed: 0,
    faults: {
      transientError: 0,
      truncatedBody: 0,
      duplicatePages: 0,
      duplicateRows: 0,
      malformedTimestamp: 0,
      missingField: 0,
      epochSeconds: 0,
      controlChar: 0,
      deepProperties: 0,
      unexactNumber: 0,
      unknownType: 0,
      backCursor: 0,
      sidewaysCursor: 0,
      emptyPage: 0,
      conflictingDuplicate: 0,
      oversizeBody: 0,
      endlessBody: 0,
      hostileError: 0,
      refreshedCursorRejected: 0,
      latencyMsTotal: 0,
    },
  };
}

/** Counts one answered status. */
export function countStatus(stats: SimStats, status: number): void {
  stats.byStatus[status] = (stats.byStatus[status] ?? 0) + 1;
  if (status === 200) stats.ok++;
  if (status === 429) stats.rateLimited++;
}

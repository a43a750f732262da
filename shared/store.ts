import type { Sql } from 'postgres';
import { createPlan, fallbackToOneChain, finishRange, listChains, renewSourceLease } from './db/chains.ts';
import { acquireLease, recordFailure, recordRateLimited, releaseLease } from './db/checkpoints.ts';
import { createDb } from './db/client.ts';
import { persistPage } from './db/persist.ts';
import type { StepStore } from './step.ts';

/** The step's view of the database, bound to one postgres.js client. */
export function createStore(sql: Sql): StepStore {
  const db = createDb(sql);
  return {
    acquireLease: (args) => acquireLease(db, args),
    recordRateLimited: (args) => recordRateLimited(db, args),
    persistPage: (args) => persistPage(sql, args),
    releaseLease: (args) => releaseLease(db, args),
    recordFailure: (args) => recordFailure(db, args),
    listChains: (sourceId) => listChains(db, sourceId),
    createPlan: (args) => createPlan(db, args),
    finishRange: (args) => finishRange(db, args),
    fallbackToOneChain: (args) => fallbackToOneChain(db, args),
    renewSourceLease: (args) => renewSourceLease(db, args),
  };
}

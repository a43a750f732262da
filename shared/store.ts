import type { Sql } from 'postgres';
import { createPlan, fallbackToOneChain, finishRange, listChains, renewSourceLease } from './db/chains.ts';
import { acquireLease, recordFailure, recordRateLimited, releaseLease } from './db/checkpoints.ts';
import { createDb } from './db/client.ts';
import { recordPacerAnswer, releasePacerSlot, reservePacerSlot } from './db/pacer.ts';
import { persistPage } from './db/persist.ts';
import type { StepStore } from './step.ts';

/**
 * The step's view of the database, bound to one postgres.js client. `pacerKey` names the
 * upstream (its URL): every chain of every source that reads it shares that pacer row.
 */
export function createStore(sql: Sql, options: { pacerKey?: string } = {}): StepStore {
  const db = createDb(sql);
  const key = options.pacerKey;
  return {
    ...(key
      ? {
          pacer: {
            reserve: (args) => reservePacerSlot(db, { key, ...args }),
            answered: (args) => recordPacerAnswer(db, { key, ...args }),
            release: (args) => releasePacerSlot(db, { key, ...args }),
          },
        }
      : {}),
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

import type { Sql } from 'postgres';
import type { StepStore } from '../step/contract.ts';
import { createPlan, fallbackToOneChain, finishRange, listChains, renewSourceLease } from './chains.ts';
import { acquireLease, addRequests, recordFailure, recordRateLimited, releaseLease } from './checkpoints.ts';
import { createDb } from './client.ts';
import { recordPacerAnswer, releasePacerSlot, reservePacerSlot } from './pacer.ts';
import { persistPage } from './persist.ts';
import { beginTopUp, newestStored, storedIds } from './topup.ts';

/**
 * The step's view of the database, bound to one postgres.js client: the one place that builds
 * the step's `Db` and binds every repository function to it. `pacerKey` names the upstream (its
 * URL): every chain of every source that reads it shares that pacer row.
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
    addRequests: (args) => addRequests(db, args),
    persistPage: (args) => persistPage(db, args),
    releaseLease: (args) => releaseLease(db, args),
    recordFailure: (args) => recordFailure(db, args),
    listChains: (sourceId) => listChains(db, sourceId),
    createPlan: (args) => createPlan(db, args),
    finishRange: (args) => finishRange(db, args),
    fallbackToOneChain: (args) => fallbackToOneChain(db, args),
    renewSourceLease: (args) => renewSourceLease(db, args),
    topUp: {
      newestStored: (sourceId) => newestStored(db, sourceId),
      storedIds: (args) => storedIds(db, args),
      beginTopUp: (args) => beginTopUp(db, args),
    },
  };
}

import { describe, expect, it } from 'vitest';
import { definitionToAsl } from '#infra/definition.ts';
import {
  CHAIN_FAILED_STATE,
  CHAINS_MAP_STATE,
  FAILED_STATE,
  FETCH_PAGE_STATE,
  FUNCTION_ERROR_CLASSES,
  LAMBDA_ENVIRONMENT_ERRORS,
  PLAN_STATE,
} from '#infra/state-machine.ts';
import * as dbErrors from '#shared/db/errors.ts';
import { DatabaseUnavailableError, DB_ERROR_CLASSES } from '#shared/db/errors.ts';
import * as errors from '#shared/errors.ts';
import { DataSyncError, ERROR_CLASSES, errorKinds } from '#shared/errors.ts';
import { buildStack } from './support.ts';

/** Concrete DataSyncError subclasses a module exports, found by walking its exports. */
function errorClassesExportedBy(module: Record<string, unknown>) {
  return Object.values(module).filter(
    (value): value is errors.DataSyncErrorClass =>
      typeof value === 'function' && value.prototype instanceof DataSyncError,
  );
}

const { template } = buildStack();
const [definition] = Object.values(template.findResources('AWS::StepFunctions::StateMachine')).map((r) =>
  definitionToAsl(r.Properties.DefinitionString),
);
type Rule = { ErrorEquals: string[]; Next?: string };
type Task = { Retry: Rule[]; Catch: Rule[] };
type Graph = { States: Record<string, Task & { ItemProcessor?: Graph }> };
const top = (definition as Graph).States;
// Plan at the top, FetchPage inside the chains' Map: both invoke the function, both must agree.
const tasks = [top[PLAN_STATE]!, top[CHAINS_MAP_STATE]!.ItemProcessor!.States[FETCH_PAGE_STATE]!];
const retriedBy = tasks.map((t) => t.Retry.flatMap((r) => r.ErrorEquals));
// States.ALL also ends in Failed, but an explicit name says the failure is intended.
const caughtToFailedBy = tasks.map((t) =>
  t.Catch.filter((c) => c.Next === FAILED_STATE || c.Next === CHAIN_FAILED_STATE).flatMap((c) =>
    c.ErrorEquals.filter((e) => e !== 'States.ALL'),
  ),
);

// The registry as the issue defines it, independent of how the state machine module builds it.
const registry = errorKinds([...ERROR_CLASSES, ...DB_ERROR_CLASSES]);

describe('error registry -> state machine', () => {
  it('holds every error class shared/errors.ts and shared/db/errors.ts export', () => {
    const exported = [...errorClassesExportedBy(errors), ...errorClassesExportedBy(dbErrors)];
    expect(exported.length).toBeGreaterThan(5);
    // Class names, not the classes: toContain on a missing registry does not fail for a function.
    const inRegistry = FUNCTION_ERROR_CLASSES.map((c) => c.name);
    expect(inRegistry).toEqual(expect.arrayContaining(exported.map((c) => c.name)));
    expect(inRegistry).toContain('DatabaseUnavailableError');
    expect(inRegistry).toContain('PageRejectedByDatabaseError');
  });

  it('has both kinds, so the checks below cannot pass on an empty side', () => {
    expect(registry.filter((e) => e.transient).length).toBeGreaterThan(2);
    expect(registry.filter((e) => !e.transient).length).toBeGreaterThan(2);
  });

  it.each(registry.filter((e) => e.transient))(
    'retries the transient $name in Plan and FetchPage',
    ({ name }) => {
      for (const retried of retriedBy) expect(retried).toContain(name);
      for (const caught of caughtToFailedBy) expect(caught).not.toContain(name);
    },
  );

  it.each(registry.filter((e) => !e.transient))(
    'fails the execution at once on the fatal $name (never retried)',
    ({ name }) => {
      for (const caught of caughtToFailedBy) expect(caught).toContain(name);
      for (const retried of retriedBy) expect(retried).not.toContain(name);
    },
  );

  // Lambda's own environment errors belong to no class of ours, yet the same rule holds: an
  // error another attempt can cure is retried by both tasks, never caught to Failed first.
  it.each([...LAMBDA_ENVIRONMENT_ERRORS])(
    'retries the Lambda environment error %s in Plan and FetchPage',
    (name) => {
      for (const retried of retriedBy) expect(retried).toContain(name);
      for (const caught of caughtToFailedBy) expect(caught).not.toContain(name);
    },
  );

  it('reads name and transient from the thrown instance', () => {
    expect(errorKinds([errors.AuthError, DatabaseUnavailableError])).toEqual([
      { name: 'AuthError', transient: false },
      { name: 'DatabaseUnavailableError', transient: true },
    ]);
  });
});

import { describe, expect, it } from 'vitest';
import { createSql } from '#shared/db/client.ts';
import { describeDbError } from '#shared/db/connection-errors.ts';
import {
  checkpointConflict,
  DatabaseUnavailableError,
  DB_ERROR_CLASSES,
  leaseHeld,
  PageRejectedByDatabaseError,
  pageRejected,
} from '#shared/db/errors.ts';
import { CheckpointConflictError, ConfigError, LeaseHeldError } from '#shared/errors.ts';

describe('the database layer errors', () => {
  it('says what a connect timeout means: no PostgreSQL answer at that host and port', () => {
    const described = describeDbError(
      Object.assign(new Error('write CONNECT_TIMEOUT 10.0.0.9:5432'), { code: 'CONNECT_TIMEOUT' }),
      'postgres://app:pw-not-printed@10.0.0.9:5432/ingest',
    );
    expect(described).toBeInstanceOf(DatabaseUnavailableError);
    const message = (described as Error).message;
    expect(message).toContain(
      'Cannot reach PostgreSQL at 10.0.0.9:5432/ingest: no PostgreSQL answer within the connect timeout',
    );
    expect(message).toContain('finish its startup handshake');
    expect(message).not.toContain('pw-not-printed');
  });

  it('gives each class that leaves the layer the name Step Functions matches and says whether a retry helps', () => {
    expect(DB_ERROR_CLASSES.map((C) => [C.name, new C('x').name, new C('x').transient])).toEqual([
      ['DatabaseUnavailableError', 'DatabaseUnavailableError', true],
      ['PageRejectedByDatabaseError', 'PageRejectedByDatabaseError', false],
    ]);
  });

  it('lists every problem of a connection object at once, with the fix', () => {
    const error = (() => {
      try {
        createSql({ host: '', port: 70_000, user: 'u', password: 'p', database: '' });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message).toMatch(/host is required[\s\S]*→ at host/);
    expect(message).toMatch(/→ at port/);
    expect(message).toMatch(/database is required/);
    expect(message).toContain('Set DATABASE_URL to postgres://');
  });

  it('names the holder, the expiry and what to do for a held lease', () => {
    const error = leaseHeld('src', 'exec-1', Date.UTC(2026, 0, 1));
    expect(error).toBeInstanceOf(LeaseHeldError);
    expect(error.message).toContain('"src" is being ingested by exec-1');
    expect(error.message).toContain('2026-01-01T00:00:00.000Z');
    expect(error.message).toMatch(/Wait for that execution to finish/);
    expect(leaseHeld('src', null, null).message).toContain(
      'another execution, whose lease expires at an unknown time',
    );
  });

  it('says what the checkpoint was expected to be, what was found, and that a retry continues', () => {
    const error = checkpointConflict('src', 3, 'exec-1', { version: 4, leaseOwner: 'exec-2' });
    expect(error).toBeInstanceOf(CheckpointConflictError);
    expect(error.message).toContain(
      'expected version 3 with the lease held by exec-1, found version 4, lease held by exec-2',
    );
    expect(error.message).toMatch(/Retrying reads the new checkpoint/);
    expect(checkpointConflict('src', 3, null, undefined).message).toContain(
      'expected version 3, found no checkpoint row at all',
    );
  });

  it('turns a refused row into PageRejectedByDatabaseError pointing at normalisation, and leaves other errors alone', () => {
    const refused = pageRejected(
      Object.assign(new Error('invalid input syntax for type uuid'), { code: '22P02' }),
      'events',
    );
    expect(refused).toBeInstanceOf(PageRejectedByDatabaseError);
    expect((refused as Error).message).toContain('inserting into events (22P02: invalid input syntax');
    expect((refused as Error).message).toContain('shared/upstream/normalise.ts');
    const timeout = Object.assign(new Error('canceling statement due to statement timeout'), {
      code: '57014',
    });
    expect(pageRejected(timeout, 'events')).toBe(timeout);
    expect(new DatabaseUnavailableError('x').transient).toBe(true);
  });
});

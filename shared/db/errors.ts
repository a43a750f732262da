import postgres from 'postgres';
import { CheckpointConflictError, ConfigError, DataSyncError, LeaseHeldError } from '../errors.ts';

/*
 * Every error the database layer raises, in one place (connection failures are translated in
 * connection-errors.ts, into the classes defined here). Each message says what happened, where,
 * and what to do. Two kinds:
 *
 * - Errors that leave the layer. Their `name` is what Step Functions matches (Retry/Catch), and
 *   `transient` says whether another attempt can cure them. The layer's own classes are in
 *   DB_ERROR_CLASSES; it also raises the shared ConfigError, LeaseHeldError and
 *   CheckpointConflictError (shared/errors.ts), built here.
 * - Signals inside the layer (NotEncodableError, CopyRefusedError): persistPage catches them and
 *   takes its INSERT path instead; they never reach a caller.
 */

/** PostgreSQL cannot be reached (refused, timed out, dropped). Transient: the state machine retries it. */
export class DatabaseUnavailableError extends DataSyncError {
  override readonly name = 'DatabaseUnavailableError';
  readonly transient = true;
}

/**
 * The database refused a row of the page (a value it cannot store): nothing of the page was
 * stored. Fatal: fetching the same page again would fail the same way.
 */
export class PageRejectedByDatabaseError extends DataSyncError {
  override readonly name = 'PageRejectedByDatabaseError';
  readonly transient = false;
}

/** The classes of this layer that reach the step and the state machine. */
export const DB_ERROR_CLASSES = [DatabaseUnavailableError, PageRejectedByDatabaseError] as const;

/**
 * A value the binary encoder cannot represent exactly; persistPage then uses the SQL insert.
 * normalisePage never produces one (ids are canonical UUIDs, instants finite, properties parsed JSON).
 */
export class NotEncodableError extends Error {
  override readonly name = 'NotEncodableError';
}

/** The COPY was refused by the server (a duplicate key, a bad value): persistPage rolls back to its savepoint. */
export class CopyRefusedError extends Error {
  override readonly name = 'CopyRefusedError';
}

/** Another execution holds a live lease on the source. */
export function leaseHeld(
  sourceId: string,
  holder: string | null,
  expiresAtMs: number | null,
): LeaseHeldError {
  const until = expiresAtMs != null ? new Date(expiresAtMs).toISOString() : 'an unknown time';
  return new LeaseHeldError(
    `Source "${sourceId}" is being ingested by ${holder ?? 'another execution'}, whose lease expires at ${until}. ` +
      'Wait for that execution to finish (or stop it), or wait until the lease expires, then start this one again.',
  );
}

/**
 * The checkpoint moved under a write, saying what moved so the log says why the write lost.
 * `found` is the checkpoint's version and lease holder as the losing writer saw them
 * (undefined: no checkpoint row at all).
 */
export function checkpointConflict(
  sourceId: string,
  expectedVersion: number,
  owner: string | null,
  found: { version: number; leaseOwner: string | null } | undefined,
): CheckpointConflictError {
  const seen = found
    ? `version ${found.version}, lease held by ${found.leaseOwner ?? 'nobody'}`
    : 'no checkpoint row at all';
  const expected = owner
    ? `version ${expectedVersion} with the lease held by ${owner}`
    : `version ${expectedVersion}`;
  return new CheckpointConflictError(
    `Checkpoint of source "${sourceId}" moved under this invocation: expected ${expected}, found ${seen}. ` +
      'Another invocation committed first; nothing from this one was stored. Retrying reads the new checkpoint and continues from it.',
  );
}

/**
 * Data errors (class 22: bad uuid, NUL in text, value out of range) and constraint errors
 * (class 23) are about a row, not the connection: say so instead of a bare driver message.
 * Anything else is returned unchanged.
 */
export function pageRejected(error: unknown, table: string): unknown {
  const e = error as { code?: unknown; message?: string };
  if (typeof e?.code !== 'string' || !(e.code.startsWith('22') || e.code.startsWith('23'))) return error;
  return new PageRejectedByDatabaseError(
    `PostgreSQL refused a row of the page while inserting into ${table} (${e.code}: ${e.message}). ` +
      'Nothing of the page was stored and the checkpoint did not move. Such a value must be rejected during ' +
      'normalisation (shared/upstream/normalise.ts) so it lands in rejected_events instead.',
    { cause: error },
  );
}

/**
 * What the INSERT path can settle becomes CopyRefusedError: a value the server refused (class
 * 22), a constraint (class 23: an id stored already), or the probe's "transaction aborted"
 * (25P02). Anything else (the connection, a statement timeout, a deadlock) stays as it is.
 */
export function copyRefusal(error: unknown): unknown {
  if (error instanceof CopyRefusedError) return error;
  if (!(error instanceof postgres.PostgresError)) return error;
  const e = error as { code?: unknown; message?: string };
  if (e?.code === '25P02') {
    return new CopyRefusedError(
      "PostgreSQL refused the COPY (the transaction is aborted; postgres.js does not pass on the COPY's own error, " +
        'porsager/postgres#1173: the server log has it)',
      { cause: error },
    );
  }
  if (typeof e?.code === 'string' && (e.code.startsWith('22') || e.code.startsWith('23'))) {
    return new CopyRefusedError(`PostgreSQL refused the COPY (${e.code}: ${e.message})`, { cause: error });
  }
  return error;
}

/** The migrations folder has no readable journal. */
export function journalUnreadable(journalPath: string, error: unknown): ConfigError {
  return new ConfigError(
    `Cannot read the migrations journal ${journalPath} (${(error as Error).message}). ` +
      'Pass the folder drizzle-kit generated (it holds meta/_journal.json), e.g. MIGRATIONS_DIR for the migrate function.',
  );
}

/** The journal is not drizzle-kit's format. `details` is the parse error, readable. */
export function journalMalformed(journalPath: string, details: string): ConfigError {
  return new ConfigError(
    `The migrations journal ${journalPath} is not drizzle-kit's format:\n${details}\n` +
      'Regenerate it with npx drizzle-kit generate.',
  );
}

/** The journal lists a migration whose SQL file is missing. */
export function migrationUnreadable(tag: string, path: string, error: unknown): ConfigError {
  return new ConfigError(
    `The migrations journal lists ${tag} but ${path} cannot be read (${(error as Error).message}). Restore the file from git.`,
  );
}

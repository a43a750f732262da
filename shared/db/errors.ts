import { DrizzleQueryError } from 'drizzle-orm';
import postgres, { type Sql } from 'postgres';
import { z } from 'zod';
import { CheckpointConflictError, ConfigError, DataSyncError, LeaseHeldError } from '../errors.ts';
import type { DbLike } from './client.ts';

/*
 * Every error the database layer raises, in one place. Each message says what happened, where,
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

/** The connection settings (DATABASE_URL or the database secret) do not parse. */
export function invalidConnection(error: z.ZodError): ConfigError {
  return new ConfigError(
    `Invalid database connection:\n${z.prettifyError(error)}\n` +
      'Set DATABASE_URL to postgres://user:password@host:port/dbname (or fix the DATABASE_SECRET_ARN secret).',
  );
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

const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  // Server-side: shutting down, starting up, out of connection slots.
  '57P01',
  '57P02',
  '57P03',
  '53300',
]);
const REFUSED_CONFIG_CODES = new Set(['28P01', '28000', '3D000']);
/** Node's codes for a server certificate that does not chain to a CA this process trusts. */
const UNTRUSTED_CERTIFICATE_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
]);
const TLS_MODES_HELP =
  'DATABASE_SSL=require would encrypt without checking who answers; do not use it where the network is not yours.';

/**
 * Turns a connection-level failure into a named error whose message names the target and the
 * fix; any other error (a constraint, a bad value) is returned unchanged. `target` is a
 * postgres:// URL (its password is never printed) or the client itself.
 */
export function describeDbError(error: unknown, target: string | Sql): unknown {
  if (error instanceof DataSyncError) return error;
  // drizzle wraps the driver's error (with the failed query) and keeps it as the cause.
  const driverError = error instanceof DrizzleQueryError ? error.cause : error;
  const code = (driverError as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return error;
  const where = typeof target === 'string' ? describeUrl(target) : describeTarget(target);
  const cause = driverError instanceof Error ? driverError.message : String(driverError);
  if (UNREACHABLE_CODES.has(code) || code.startsWith('08')) {
    return new DatabaseUnavailableError(
      `Cannot reach PostgreSQL at ${where} (${code}: ${cause}). Check DATABASE_URL (or the DATABASE_SECRET_ARN secret) ` +
        'names the right host and port, and that PostgreSQL is running and accepts connections from here.',
      { cause: driverError },
    );
  }
  // Fatal: the certificate will not change between retries, and connecting anyway is what
  // verification exists to prevent.
  if (UNTRUSTED_CERTIFICATE_CODES.has(code)) {
    return new ConfigError(
      `PostgreSQL at ${where} presented a TLS certificate this process does not trust (${code}: ${cause}). ` +
        'With DATABASE_SSL=verify-full (the deployed default) the certificate must chain to a trusted CA. On Lambda, set ' +
        "NODE_EXTRA_CA_CERTS=/var/runtime/ca-cert.pem (Amazon's RDS CAs); elsewhere point NODE_EXTRA_CA_CERTS at the " +
        `PEM of the CA that signed the server's certificate. If it is not your server, do not connect to it. ${TLS_MODES_HELP}`,
      { cause: driverError },
    );
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new ConfigError(
      `PostgreSQL at ${where} presented a TLS certificate for another host name (${code}: ${cause}). ` +
        'With DATABASE_SSL=verify-full the host connected to must be one the certificate names: connect by the ' +
        "server's own endpoint (the RDS endpoint in the database secret, not an IP address or an alias), or fix " +
        `the server's certificate. ${TLS_MODES_HELP}`,
      { cause: driverError },
    );
  }
  if (REFUSED_CONFIG_CODES.has(code)) {
    return new ConfigError(
      `PostgreSQL at ${where} refused the connection (${code}: ${cause}). Check the user, password and database name in ` +
        'DATABASE_URL (or the DATABASE_SECRET_ARN secret), and that the database exists.',
    );
  }
  return error;
}

/** Runs a database call and rethrows connection failures as named, actionable errors. */
export async function withDbErrors<T>(db: DbLike, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw describeDbError(error, typeof db === 'function' ? db : db.$client);
  }
}

/** Where a client connects, for messages: host:port/database, never the password. */
export function describeTarget(sql: Sql): string {
  const o = sql.options as unknown as { host?: string[]; port?: number[]; database?: string };
  const host = o.host?.[0] ?? 'localhost';
  const port = o.port?.[0] ?? 5432;
  return `${host}:${port}/${o.database ?? ''}`;
}

function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || 'localhost'}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return '<unparseable DATABASE_URL>';
  }
}

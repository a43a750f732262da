import { DrizzleQueryError } from 'drizzle-orm';
import type { Sql } from 'postgres';
import { z } from 'zod';
import { ConfigError, DataSyncError } from '../errors.ts';
import { DatabaseUnavailableError } from './errors.ts';

/*
 * Connection-level failures of postgres.js (refused, timed out, a TLS certificate, a bad
 * password) as named errors whose message names the target and the fix. Everything else the
 * driver raises (a constraint, a bad value) passes through unchanged.
 */

/** The connection settings (DATABASE_URL or the database secret) do not parse. */
export function invalidConnection(error: z.ZodError): ConfigError {
  return new ConfigError(
    `Invalid database connection:\n${z.prettifyError(error)}\n` +
      'Set DATABASE_URL to postgres://user:password@host:port/dbname (or fix the DATABASE_SECRET_ARN secret).',
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
/** Whether `error` (a driver error, or a named error holding one as its cause) is an untrusted server certificate. */
export function isUntrustedCertificate(error: unknown): boolean {
  const driverError = (error as { cause?: unknown } | null)?.cause ?? error;
  const code = (driverError as { code?: unknown } | null)?.code;
  return typeof code === 'string' && UNTRUSTED_CERTIFICATE_CODES.has(code);
}
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
  if (code === 'CONNECT_TIMEOUT') {
    return new DatabaseUnavailableError(
      `Cannot reach PostgreSQL at ${where}: no PostgreSQL answer within the connect timeout (${cause}). Expected the ` +
        'server to accept the connection and finish its startup handshake; a filtered port, an address that does not ' +
        'route, or another server on that port looks like this. Check DATABASE_URL (or the DATABASE_SECRET_ARN secret) ' +
        'names the right host and port, and that PostgreSQL is running and accepts connections from here.',
      { cause: driverError },
    );
  }
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

/**
 * Runs a database call on `sql` and rethrows connection failures as named, actionable errors.
 * Repository functions pass their Db's client (`db.$client`).
 */
export async function withDbErrors<T>(sql: Sql, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw describeDbError(error, sql);
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

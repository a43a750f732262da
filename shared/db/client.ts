import net from 'node:net';
import { DrizzleQueryError } from 'drizzle-orm';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres, { type Sql, type TransactionSql } from 'postgres';
import { z } from 'zod';
import { ConfigError, DataSyncError } from '../errors.ts';
import * as schema from './schema.ts';

export type Db = PostgresJsDatabase<typeof schema> & { $client: Sql };
/** What the checkpoint functions accept: the drizzle instance, or the postgres.js client it belongs to. */
export type DbLike = Db | Sql;

/** PostgreSQL cannot be reached (refused, timed out, dropped). Transient: the state machine retries it. */
export class DatabaseUnavailableError extends DataSyncError {
  override readonly name = 'DatabaseUnavailableError';
  readonly transient = true;
}

const connectionObjectSchema = z.object({
  host: z.string().min(1, { error: 'host is required' }),
  port: z.number().int().min(1).max(65_535),
  user: z.string().min(1, { error: 'user is required' }),
  password: z.string(),
  database: z.string().min(1, { error: 'database is required' }),
  ssl: z.union([z.boolean(), z.literal('require')]).optional(),
});
export type ConnectionObject = z.infer<typeof connectionObjectSchema>;

const connectionSchema = z.union([
  z.string().refine((v) => /^postgres(ql)?:\/\//.test(v), {
    error: 'must be a postgres:// URL such as postgres://user:password@host:5432/dbname',
  }),
  connectionObjectSchema,
]);

const optionsSchema = z.object({
  max: z.number().int().min(1).max(100).default(1),
  applicationName: z.string().min(1).max(63).default('datasync-ingest'),
  /** Server-side limit per statement; a 5000-row page takes well under a second. */
  statementTimeoutMs: z.number().int().min(0).default(60_000),
  connectTimeoutSeconds: z.number().int().min(1).default(10),
  /** Lambda containers freeze between invocations: drop idle sockets before the server or a NAT does. */
  idleTimeoutSeconds: z.number().int().min(1).default(60),
});
export type CreateSqlOptions = z.input<typeof optionsSchema>;

/**
 * postgres.js 3.4 leaves Nagle's algorithm on. After a large write (a 1 MB COPY payload) the
 * next small message then waits for the server's delayed ACK: measured 40 ms per page on the
 * 2-core machine (docs/benchmarks.md). libpq, node-postgres and pgjdbc set TCP_NODELAY; this
 * does the same through postgres.js's `socket` option, which hands it the socket to connect.
 * A Unix socket path is connected as it is; a multi-host URL keeps postgres.js's own socket,
 * which tries the hosts in turn.
 */
function noDelaySocket(options: { host?: string[]; port?: number[]; path?: string | false }): net.Socket {
  const socket = new net.Socket();
  if (options.path) return socket.connect(options.path);
  socket.setNoDelay(true);
  const host = options.host?.[0] ?? 'localhost';
  const port = options.port?.[0] ?? 5432;
  // postgres.js sets these on its own socket and reads them back: socket.host is the TLS SNI
  // servername in secure(), and both appear in its connection error messages.
  Object.assign(socket, { host, port });
  return socket.connect(port, host);
}

/** postgres://u:p@h1:5432,h2:5432/db: postgres.js tries the hosts in turn, which a given socket cannot. */
function isMultiHost(url: string): boolean {
  const authority = url.replace(/^postgres(ql)?:\/\//, '').split(/[/?#]/, 1)[0] ?? '';
  return authority.slice(authority.lastIndexOf('@') + 1).includes(',');
}

/**
 * A postgres.js client: one connection by default (a Lambda invocation does one thing at a
 * time, and RDS connection slots are the scarce resource), bounded connect and statement
 * times, server notices silenced.
 */
export function createSql(config: string | ConnectionObject, opts: CreateSqlOptions = {}): Sql {
  const parsedConfig = connectionSchema.safeParse(config);
  if (!parsedConfig.success) {
    throw new ConfigError(
      `Invalid database connection: ${parsedConfig.error.issues.map((i) => `${i.path.join('.') || 'url'} ${i.message}`).join('; ')}. ` +
        'Set DATABASE_URL to postgres://user:password@host:port/dbname (or fix the DATABASE_SECRET_ARN secret).',
    );
  }
  const o = optionsSchema.parse(opts);
  const c = parsedConfig.data;
  const common = {
    ...((typeof c === 'string' ? isMultiHost(c) : c.host.includes(',')) ? {} : { socket: noDelaySocket }),
    max: o.max,
    connect_timeout: o.connectTimeoutSeconds,
    idle_timeout: o.idleTimeoutSeconds,
    onnotice: () => {},
    connection: {
      application_name: o.applicationName,
      statement_timeout: o.statementTimeoutMs,
    },
  };
  const sql =
    typeof c === 'string'
      ? postgres(c, common)
      : postgres({
          ...common,
          host: c.host,
          port: c.port,
          username: c.user,
          password: c.password,
          database: c.database,
          ssl: c.ssl === 'require' ? 'require' : (c.ssl ?? false),
        });
  createDb(sql);
  return sql;
}

/**
 * The drizzle instance of a postgres.js client; the same one for every call with that client.
 *
 * drizzle's postgres-js driver replaces the client's parsers for instants (timestamptz and
 * friends then arrive as text, which drizzle's columns decode) and its json serializers. If
 * that happened at the first repository call, a raw query run before it would see Dates and
 * the same query run after it strings. createSql therefore attaches the drizzle instance when
 * it makes the client: every client it returns has drizzle's parsers for its whole life.
 * A client made elsewhere gets them at its first createDb.
 */
export function createDb(sql: Sql | TransactionSql): Db {
  let db = drizzleOf.get(sql);
  if (!db) {
    // A transaction's client runs queries like the pool's; drizzle only calls unsafe() on it.
    db = drizzle(sql as Sql, { schema }) as Db;
    drizzleOf.set(sql, db);
  }
  return db;
}

const drizzleOf = new WeakMap<Sql | TransactionSql, Db>();

/** The drizzle instance to query with, from whichever form a caller holds. */
export function toDb(db: DbLike | TransactionSql): Db {
  return typeof db === 'function' ? createDb(db) : db;
}

/** Where a client connects, for messages: host:port/database, never the password. */
export function describeTarget(sql: Sql): string {
  const o = sql.options as unknown as { host?: string[]; port?: number[]; database?: string };
  const host = o.host?.[0] ?? 'localhost';
  const port = o.port?.[0] ?? 5432;
  return `${host}:${port}/${o.database ?? ''}`;
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
  if (REFUSED_CONFIG_CODES.has(code)) {
    return new ConfigError(
      `PostgreSQL at ${where} refused the connection (${code}: ${cause}). Check the user, password and database name in ` +
        'DATABASE_URL (or the DATABASE_SECRET_ARN secret), and that the database exists.',
    );
  }
  return error;
}

function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || 'localhost'}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return '<unparseable DATABASE_URL>';
  }
}

/** Runs a database call and rethrows connection failures as named, actionable errors. */
export async function withDbErrors<T>(db: DbLike, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw describeDbError(error, typeof db === 'function' ? db : db.$client);
  }
}

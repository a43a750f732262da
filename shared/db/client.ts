import net from 'node:net';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres, { type Sql } from 'postgres';
import { z } from 'zod';
import { type DatabaseSsl, databaseSslSchema } from '../config.ts';
import { isPostgresUrl } from '../url.ts';
import { invalidConnection } from './connection-errors.ts';
import * as schema from './schema.ts';

/**
 * What every repository function takes: the drizzle instance, with the postgres.js client it
 * belongs to as `$client` (the raw-SQL paths: COPY, the pacer's row lock, error translation).
 */
export type Db = PostgresJsDatabase<typeof schema> & { $client: Sql };

// How a connection uses TLS (env DATABASE_SSL): defined with the other settings in shared/config.ts.
export { type DatabaseSsl, databaseSslSchema };

const connectionObjectSchema = z.object({
  host: z.string().min(1, { error: 'host is required' }),
  port: z.number().int().min(1).max(65_535),
  user: z.string().min(1, { error: 'user is required' }),
  password: z.string(),
  database: z.string().min(1, { error: 'database is required' }),
  /** true is verify-full, false is disable; absent is disable. */
  ssl: z.union([z.boolean(), databaseSslSchema]).optional(),
});
export type ConnectionObject = z.infer<typeof connectionObjectSchema>;

const connectionSchema = z.union([
  z.string().refine(isPostgresUrl, {
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
  /**
   * Overrides the TLS mode of the connection: the URL's sslmode (postgres.js reads
   * disable/require/verify-full there too) or the connection object's `ssl`.
   */
  ssl: databaseSslSchema.optional(),
  /** PEM CAs a verifying mode trusts instead of the process's store (DATABASE_CA_FILE's contents). */
  ca: z.string().min(1).optional(),
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
  if (!parsedConfig.success) throw invalidConnection(parsedConfig.error);
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
      ? postgres(c, withUrlSsl(c, o.ssl, common, o.ca))
      : postgres({
          ...common,
          host: c.host,
          port: c.port,
          username: c.user,
          password: c.password,
          database: c.database,
          ssl: postgresSsl(o.ssl ?? c.ssl ?? false, c.host.includes(',') ? null : c.host, o.ca),
        });
  createDb(sql);
  return sql;
}

/**
 * postgres.js's `ssl` for a mode. Its string 'require' sets rejectUnauthorized: false. An object
 * is handed to tls.connect beside the socket and the SNI servername postgres.js sets itself (the
 * host name; none for an IP address). Node checks the certificate against
 * `servername || host || 'localhost'`, so without `host` a connection to an IP address would be
 * checked against the name "localhost": verify-full passes the host it connects to.
 */
function postgresSsl(
  mode: DatabaseSsl | boolean,
  host: string | null,
  ca?: string,
): false | 'require' | { rejectUnauthorized: true; host?: string; ca?: string } {
  if (mode === false || mode === 'disable') return false;
  if (mode === 'require') return 'require';
  return { rejectUnauthorized: true, ...(host ? { host } : {}), ...(ca ? { ca } : {}) };
}

/**
 * The TLS mode a URL asks for, when it asks to verify: postgres.js reads sslmode itself, but
 * its verify-full then checks an IP host against "localhost" (see postgresSsl).
 */
function verifyingModeOf(url: URL): 'verify-full' | undefined {
  const mode = url.searchParams.get('sslmode');
  const verifies =
    mode === 'verify-full' || mode === 'verify-ca' || url.searchParams.get('sslrootcert') === 'system';
  return verifies ? 'verify-full' : undefined;
}

/** The one host of a URL ([::1] without brackets), or null for a multi-host URL. */
function singleHostOf(url: string): { url: URL; host: string } | null {
  if (isMultiHost(url)) return null;
  try {
    const u = new URL(url);
    return { url: u, host: (u.hostname || 'localhost').replace(/^\[(.*)\]$/, '$1') };
  } catch {
    return null;
  }
}

/**
 * The options for a URL: `ssl` when DATABASE_SSL overrides the URL or the URL asks to verify;
 * otherwise postgres.js applies the URL's sslmode (disable, require, prefer) itself.
 */
function withUrlSsl<T extends object>(
  url: string,
  override: DatabaseSsl | undefined,
  common: T,
  ca?: string,
): T {
  const single = singleHostOf(url);
  const mode = override ?? (single ? verifyingModeOf(single.url) : undefined);
  return mode ? { ...common, ssl: postgresSsl(mode, single?.host ?? null, ca) } : common;
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
export function createDb(sql: Sql): Db {
  let db = drizzleOf.get(sql);
  if (!db) {
    db = drizzle(sql, { schema }) as Db;
    drizzleOf.set(sql, db);
  }
  return db;
}

const drizzleOf = new WeakMap<Sql, Db>();

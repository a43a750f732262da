import net from 'node:net';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres, { type Sql } from 'postgres';
import { z } from 'zod';
import { invalidConnection } from './errors.ts';
import * as schema from './schema.ts';

export type Db = PostgresJsDatabase<typeof schema> & { $client: Sql };
/** What the checkpoint functions accept: the drizzle instance, or the postgres.js client it belongs to. */
export type DbLike = Db | Sql;

// Callers have always imported it from here.
export { DatabaseUnavailableError } from './errors.ts';

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
export function createDb(sql: Sql): Db {
  let db = drizzleOf.get(sql);
  if (!db) {
    db = drizzle(sql, { schema }) as Db;
    drizzleOf.set(sql, db);
  }
  return db;
}

const drizzleOf = new WeakMap<Sql, Db>();

/** The drizzle instance to query with, from whichever form a caller holds. */
export function toDb(db: DbLike): Db {
  return typeof db === 'function' ? createDb(db) : db;
}

import type { Sql } from 'postgres';

/** A login role the migration keeps in step with its secret. */
export interface RoleCredentials {
  username: string;
  password: string;
}

/**
 * A connection a function leaves idle (a frozen Lambda container) keeps an auto-pausing
 * database awake: the server closes the application roles' sessions after this long idle.
 */
export const APP_ROLE_IDLE_SESSION_TIMEOUT = '1min';

/**
 * Creates (or updates) the least-privilege login roles, after the schema migrations, under the
 * master user:
 * - the writer (fetch-page) reads and writes the rows of the tables in `public`, nothing else:
 *   no DDL, no other schema (drizzle's bookkeeping stays the master's);
 * - the reader (status) may only read them.
 * The password is set from the role's secret on every run, so rotating a secret and redeploying
 * rotates the role. Grants are given again on every run, so tables a later migration adds are
 * covered. Idempotent; runs in one transaction.
 */
export async function ensureAppRoles(
  sql: Sql,
  roles: { writer: RoleCredentials; reader: RoleCredentials },
): Promise<void> {
  await sql.begin(async (tx) => {
    // CREATE ROLE is cluster-wide: two migrations at once must not both try to create it.
    await tx`select pg_advisory_xact_lock(hashtext('datasync-app-roles'))`;
    const [{ database } = { database: '' }] = await tx<
      { database: string }[]
    >`select current_database() as database`;
    for (const { username, password } of [roles.writer, roles.reader]) {
      const [exists] = await tx`select 1 from pg_roles where rolname = ${username}`;
      // Utility statements take no bind parameters: format() quotes the name and the password.
      const [{ statement } = { statement: '' }] = await tx<{ statement: string }[]>`
        select format(${exists ? 'alter role %I with login password %L' : 'create role %I with login password %L'},
          ${username}::text, ${password}::text) as statement`;
      await tx.unsafe(statement);
      const [{ timeout } = { timeout: '' }] = await tx<{ timeout: string }[]>`
        select format('alter role %I set idle_session_timeout = %L', ${username}::text,
          ${APP_ROLE_IDLE_SESSION_TIMEOUT}::text) as timeout`;
      await tx.unsafe(timeout);
    }
    const id = (name: string) => tx(name);
    const { writer, reader } = roles;
    await tx`grant connect on database ${id(database)} to ${id(writer.username)}, ${id(reader.username)}`;
    await tx`grant usage on schema public to ${id(writer.username)}, ${id(reader.username)}`;
    await tx`grant select, insert, update, delete on all tables in schema public to ${id(writer.username)}`;
    await tx`grant usage, select, update on all sequences in schema public to ${id(writer.username)}`;
    await tx`grant select on all tables in schema public to ${id(reader.username)}`;
    // Nothing beyond: no CREATE on public (PostgreSQL 15+ grants none to PUBLIC; older ones do).
    await tx`revoke create on schema public from public`;
  });
}

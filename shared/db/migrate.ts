import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Sql } from 'postgres';
import { z } from 'zod';
import { MIGRATIONS_DIR } from '../config.ts';
import { withDbErrors } from './connection-errors.ts';
import { journalMalformed, journalUnreadable, migrationUnreadable } from './errors.ts';

/** Any constant works as long as every runner uses the same one: "dsi-migr" in ASCII. */
const MIGRATION_LOCK_KEY = 0x6473_692d_6d69_6772n;

const journalSchema = z.object({
  entries: z.array(z.object({ idx: z.number(), when: z.number().int(), tag: z.string().min(1) })),
});

interface Migration {
  tag: string;
  when: number;
  hash: string;
  statements: string[];
}

/**
 * Applies the committed drizzle-kit migrations that are not applied yet, in one transaction,
 * under a transaction-scoped advisory lock: concurrent runners (two deploys, a deploy and a
 * local run) queue behind each other and the later ones find nothing to do. The bookkeeping is
 * drizzle's own (`drizzle.__drizzle_migrations`, same hash and `created_at`), so drizzle-kit
 * and drizzle's migrator agree with this runner about what is applied.
 */
export async function runMigrations(
  sql: Sql,
  opts: { migrationsFolder?: string } = {},
): Promise<{ applied: number }> {
  const migrations = await readMigrations(opts.migrationsFolder ?? MIGRATIONS_DIR);
  return withDbErrors(sql, () =>
    sql.begin(async (tx) => {
      // Schema changes on a big table may legitimately take longer than the client's default.
      await tx`set local statement_timeout = 0`;
      await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY.toString()}::bigint)`;
      await tx`create schema if not exists drizzle`;
      await tx`create table if not exists drizzle.__drizzle_migrations (
        id serial primary key, hash text not null, created_at bigint)`;
      const [last] = await tx<{ createdAt: string | null }[]>`
        select created_at::text as "createdAt" from drizzle.__drizzle_migrations
        order by created_at desc limit 1`;
      const lastWhen = last?.createdAt ? Number(last.createdAt) : Number.NEGATIVE_INFINITY;
      let applied = 0;
      for (const m of migrations) {
        if (m.when <= lastWhen) continue;
        for (const statement of m.statements) {
          if (statement.trim()) await tx.unsafe(statement);
        }
        await tx`insert into drizzle.__drizzle_migrations (hash, created_at) values (${m.hash}, ${m.when})`;
        applied++;
      }
      return { applied };
    }),
  );
}

async function readMigrations(folder: string): Promise<Migration[]> {
  const journalPath = join(folder, 'meta', '_journal.json');
  let journalText: string;
  try {
    journalText = await readFile(journalPath, 'utf8');
  } catch (error) {
    throw journalUnreadable(journalPath, error);
  }
  let json: unknown;
  try {
    json = JSON.parse(journalText);
  } catch (error) {
    throw journalMalformed(journalPath, `not JSON: ${(error as Error).message}`);
  }
  const journal = journalSchema.safeParse(json);
  if (!journal.success) throw journalMalformed(journalPath, z.prettifyError(journal.error));
  const out: Migration[] = [];
  for (const entry of journal.data.entries) {
    const path = join(folder, `${entry.tag}.sql`);
    const text = await readFile(path, 'utf8').catch((error: unknown) => {
      throw migrationUnreadable(entry.tag, path, error);
    });
    out.push({
      tag: entry.tag,
      when: entry.when,
      hash: createHash('sha256').update(text).digest('hex'),
      statements: text.split('--> statement-breakpoint'),
    });
  }
  return out;
}

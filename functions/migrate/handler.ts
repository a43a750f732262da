import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import { openDatabase } from '#shared/aws/database.ts';
import { parseDatabaseSecret, SecretCache } from '#shared/aws/secrets.ts';
import { loadDatabaseConfig } from '#shared/config.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { ConfigError } from '#shared/errors.ts';
import { ensureAppRoles } from './roles.ts';

const envSchema = z
  .object({
    MIGRATIONS_DIR: z.string().min(1).optional(),
    /** The writer role's secret (fetch-page connects with it). */
    DATABASE_WRITER_SECRET_ARN: z.string().min(1).optional(),
    /** The reader role's secret (status connects with it). */
    DATABASE_READER_SECRET_ARN: z.string().min(1).optional(),
  })
  .refine((e) => !e.DATABASE_WRITER_SECRET_ARN === !e.DATABASE_READER_SECRET_ARN, {
    error: 'set both DATABASE_WRITER_SECRET_ARN and DATABASE_READER_SECRET_ARN, or neither',
    path: ['DATABASE_READER_SECRET_ARN'],
  });

/**
 * The migration function, invoked by the stack on every deploy (before any execution can
 * start), as the master user (DATABASE_SECRET_ARN): the only function that holds it. It applies
 * the schema migrations (under an advisory lock, so concurrent or repeated runs are safe) and
 * then creates or updates the writer and reader roles from their secrets, when they are named.
 */
export function createMigrateHandler(
  options: { env?: NodeJS.ProcessEnv; secretsManager?: SecretsManagerClient } = {},
) {
  return async (): Promise<{ applied: number; roles?: string[] }> => {
    const env = options.env ?? process.env;
    const database = loadDatabaseConfig(env, 'the migrate function');
    const parsed = envSchema.safeParse(env);
    if (!parsed.success) {
      throw new ConfigError(
        `Invalid configuration of the migrate function:\n${z.prettifyError(parsed.error)}`,
      );
    }
    const config = parsed.data;
    const secrets = new SecretCache(options.secretsManager ?? new SecretsManagerClient({}));
    const role = async (arn: string, envName: string) => {
      const s = parseDatabaseSecret(await secrets.get(arn, envName), arn);
      return { username: s.username, password: s.password };
    };
    const roles =
      config.DATABASE_WRITER_SECRET_ARN && config.DATABASE_READER_SECRET_ARN
        ? {
            writer: await role(config.DATABASE_WRITER_SECRET_ARN, 'DATABASE_WRITER_SECRET_ARN'),
            reader: await role(config.DATABASE_READER_SECRET_ARN, 'DATABASE_READER_SECRET_ARN'),
          }
        : undefined;
    const sql = await openDatabase(database, secrets, 'datasync-migrate');
    try {
      const result = await runMigrations(
        sql,
        config.MIGRATIONS_DIR ? { migrationsFolder: config.MIGRATIONS_DIR } : {},
      );
      if (roles) await ensureAppRoles(sql, roles);
      return roles ? { ...result, roles: [roles.writer.username, roles.reader.username] } : result;
    } finally {
      await sql.end({ timeout: 5 });
    }
  };
}

import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import { openDatabase } from '#shared/aws/database.ts';
import { SecretCache } from '#shared/aws/secrets.ts';
import { loadDatabaseConfig } from '#shared/config.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { ConfigError } from '#shared/errors.ts';

const envSchema = z.object({ MIGRATIONS_DIR: z.string().min(1).optional() });

/**
 * The migration function, invoked by the stack on every deploy (before any execution can
 * start). Migrations take an advisory lock, so concurrent or repeated runs are safe.
 */
export function createMigrateHandler(
  options: { env?: NodeJS.ProcessEnv; secretsManager?: SecretsManagerClient } = {},
) {
  return async (): Promise<{ applied: number }> => {
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
    const sql = await openDatabase(database, secrets, 'datasync-migrate');
    try {
      return await runMigrations(
        sql,
        config.MIGRATIONS_DIR ? { migrationsFolder: config.MIGRATIONS_DIR } : {},
      );
    } finally {
      await sql.end({ timeout: 5 });
    }
  };
}

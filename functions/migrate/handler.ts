import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import { openDatabase } from '#shared/aws/database.ts';
import { SecretCache } from '#shared/aws/secrets.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { ConfigError } from '#shared/errors.ts';

const envSchema = z.object({
  DATABASE_URL: z.string().min(1).optional(),
  DATABASE_SECRET_ARN: z.string().min(1).optional(),
  MIGRATIONS_DIR: z.string().min(1).optional(),
});

/**
 * The migration function, invoked by the stack on every deploy (before any execution can
 * start). Migrations take an advisory lock, so concurrent or repeated runs are safe.
 */
export function createMigrateHandler(
  options: { env?: NodeJS.ProcessEnv; secretsManager?: SecretsManagerClient } = {},
) {
  return async (): Promise<{ applied: number }> => {
    const parsed = envSchema.safeParse(options.env ?? process.env);
    if (!parsed.success || (!parsed.data.DATABASE_URL && !parsed.data.DATABASE_SECRET_ARN)) {
      throw new ConfigError(
        'Invalid configuration: set DATABASE_SECRET_ARN (deployed: the RDS-generated secret) or DATABASE_URL (local runs)',
      );
    }
    const config = parsed.data;
    const secrets = new SecretCache(options.secretsManager ?? new SecretsManagerClient({}));
    const sql = await openDatabase(config, secrets, 'datasync-migrate');
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

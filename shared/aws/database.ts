import type { Sql } from 'postgres';
import type { DatabaseConfig } from '../config.ts';
import { createSql } from '../db/client.ts';
import { parseDatabaseSecret, type SecretCache } from './secrets.ts';

/**
 * Opens the database a function is configured for: `DATABASE_URL` (local runs; TLS as its
 * sslmode says) or the RDS-generated secret named by `DATABASE_SECRET_ARN` (deployed; TLS with
 * the certificate and host name verified, unless the secret says `"ssl": false`, which only
 * the LocalStack target's compose Postgres does). `DATABASE_SSL`, when set, overrides both.
 */
export async function openDatabase(
  config: Pick<DatabaseConfig, 'databaseUrl' | 'databaseSecretArn' | 'databaseSsl'>,
  secrets: SecretCache,
  applicationName: string,
): Promise<Sql> {
  const ssl = config.databaseSsl;
  if (config.databaseUrl) return createSql(config.databaseUrl, { applicationName, ...(ssl ? { ssl } : {}) });
  const arn = config.databaseSecretArn as string;
  const s = parseDatabaseSecret(await secrets.get(arn, 'DATABASE_SECRET_ARN'), arn);
  return createSql(
    {
      host: s.host,
      port: s.port,
      user: s.username,
      password: s.password,
      database: s.dbname,
      ssl: ssl ?? (s.ssl ? 'verify-full' : 'disable'),
    },
    { applicationName },
  );
}

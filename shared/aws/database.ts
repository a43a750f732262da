import type { Sql } from 'postgres';
import { createSql } from '../db/client.ts';
import { parseDatabaseSecret, type SecretCache } from './secrets.ts';

/**
 * Opens the database a function is configured for: `DATABASE_URL` (local runs) or the
 * RDS-generated secret named by `DATABASE_SECRET_ARN` (deployed; TLS required unless the
 * secret says `"ssl": false`, which only the LocalStack target's compose Postgres does).
 */
export async function openDatabase(
  config: { DATABASE_URL?: string | undefined; DATABASE_SECRET_ARN?: string | undefined },
  secrets: SecretCache,
  applicationName: string,
): Promise<Sql> {
  if (config.DATABASE_URL) return createSql(config.DATABASE_URL, { applicationName });
  const arn = config.DATABASE_SECRET_ARN as string;
  const s = parseDatabaseSecret(await secrets.get(arn, 'DATABASE_SECRET_ARN'), arn);
  return createSql(
    {
      host: s.host,
      port: s.port,
      user: s.username,
      password: s.password,
      database: s.dbname,
      ssl: s.ssl ? 'require' : false,
    },
    { applicationName },
  );
}

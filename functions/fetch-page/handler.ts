import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Sql } from 'postgres';
import { ZodError, z } from 'zod';
import { openDatabase } from '#shared/aws/database.ts';
import { parseApiKeySecret, SecretCache } from '#shared/aws/secrets.ts';
import { type FetchPageConfig, type FetchPageConfigInput, loadConfig, parseConfig } from '#shared/config.ts';
import { ConfigError, DataSyncError } from '#shared/errors.ts';
import { type Clock, runStep, type StepLogger, type StepMetrics, type StepOutput } from '#shared/step.ts';
import { createStore } from '#shared/store.ts';
import { createDataSyncClient } from '#shared/upstream/client.ts';

export interface HandlerOptions {
  /** Read when no typed `config` is given. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** A typed configuration (the local runner's path): validated by the same schema as the environment. */
  config?: FetchPageConfigInput;
  /** Injected in tests (aws-sdk-client-mock works on the real client too). */
  secretsManager?: SecretsManagerClient;
  logger?: StepLogger;
  metrics?: { add: StepMetrics['add']; flush(): void };
  clock?: Clock;
  fetch?: typeof fetch;
}

interface Context {
  config: FetchPageConfig;
  sql: Sql;
  run: (event: unknown) => Promise<StepOutput>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/**
 * Builds the Lambda handler. Clients are created on the first invocation and kept for the
 * container's life (one database connection, secrets read once). Configuration errors surface
 * as a named `ConfigError` from the invocation, so the state machine fails with a clear cause
 * instead of an opaque init crash.
 */
export function createHandler(options: HandlerOptions = {}) {
  const logger = options.logger ?? powertoolsLogger();
  const metrics = options.metrics ?? powertoolsMetrics();
  const clock = options.clock ?? realClock;
  let context: Promise<Context> | undefined;

  async function build(): Promise<Context> {
    const config = options.config ? parseConfig(options.config) : loadConfig(options.env ?? process.env);
    const secrets = new SecretCache(options.secretsManager ?? new SecretsManagerClient({}));
    const apiKey = config.apiKeySecretArn
      ? parseApiKeySecret(
          await secrets.get(config.apiKeySecretArn, 'DATASYNC_API_KEY_SECRET_ARN'),
          config.apiKeySecretArn,
        )
      : (config.apiKey as string);
    // openDatabase (shared/aws/database.ts) still takes the variables' names.
    const sql = await openDatabase(
      { DATABASE_URL: config.databaseUrl, DATABASE_SECRET_ARN: config.databaseSecretArn },
      secrets,
      'datasync-fetch-page',
    );
    const upstream = createDataSyncClient({
      baseUrl: config.apiUrl,
      apiKey,
      timeoutMs: config.requestTimeoutMs,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    const deps = { store: createStore(sql), upstream, clock, logger, metrics, config };
    return { config, sql, run: (event) => runStep(deps, event) };
  }

  const handler = async (event: unknown): Promise<StepOutput> => {
    try {
      context ??= build();
      const ctx = await context.catch((error: unknown) => {
        context = undefined; // a failed cold start (bad secret, say) is retried on the next invocation
        throw error;
      });
      return await ctx.run(event);
    } catch (error) {
      const named = toNamedError(error);
      logger.error('fetch-page failed', { error: named.name, message: named.message });
      throw named;
    } finally {
      metrics.flush();
    }
  };

  return Object.assign(handler, {
    /** Closes the database connection (local runs and tests; Lambda just freezes the container). */
    async close() {
      const ctx = await context?.catch(() => undefined);
      context = undefined;
      await ctx?.sql.end({ timeout: 5 });
    },
  });
}

/**
 * Step Functions matches Retry/Catch on the error name. Our classes carry theirs; bad input is a
 * ConfigError; a database that cannot be reached is transient (retried); anything else keeps its
 * name and falls to the catch-all.
 */
export function toNamedError(error: unknown): Error {
  if (error instanceof DataSyncError) return error;
  if (error instanceof ZodError) {
    return new ConfigError(
      'Invalid input to fetch-page: start the execution with input like {"sourceId":"default"}.\n' +
        z.prettifyError(error),
    );
  }
  if (error instanceof Error && error.name === 'DatabaseUnavailableError') return error;
  return error instanceof Error ? error : new Error(String(error));
}

function powertoolsLogger(): StepLogger {
  const logger = new Logger({ serviceName: 'fetch-page' });
  return {
    info: (m, f) => logger.info(m, f ?? {}),
    warn: (m, f) => logger.warn(m, f ?? {}),
    error: (m, f) => logger.error(m, f ?? {}),
  };
}

function powertoolsMetrics(): { add: StepMetrics['add']; flush(): void } {
  const metrics = new Metrics({ serviceName: 'fetch-page' });
  return {
    add: (name, unit, value) =>
      metrics.addMetric(name, unit === 'Count' ? MetricUnit.Count : MetricUnit.Milliseconds, value),
    flush: () => metrics.publishStoredMetrics(),
  };
}

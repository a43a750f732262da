import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Context as LambdaContext } from 'aws-lambda';
import type { Sql } from 'postgres';
import { ZodError, z } from 'zod';
import { openDatabase } from '#shared/aws/database.ts';
import { parseApiKeySecret, SecretCache } from '#shared/aws/secrets.ts';
import { type FetchPageConfig, type FetchPageConfigInput, loadConfig, parseConfig } from '#shared/config.ts';
import { createStore } from '#shared/db/store.ts';
import { AuthError, ConfigError, DataSyncError } from '#shared/errors.ts';
import {
  type Clock,
  type PlanOutput,
  runAction,
  type StepInvocation,
  type StepLogger,
  type StepMetrics,
  type StepOutput,
} from '#shared/step/index.ts';
import { createDataSyncClient } from '#shared/upstream/client.ts';

export interface HandlerOptions {
  /** Read when no typed `config` is given. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** A typed configuration (the local runner's path): validated by the same schema as the environment. */
  config?: FetchPageConfigInput;
  /** Injected in tests (aws-sdk-client-mock works on the real client too). */
  secretsManager?: SecretsManagerClient;
  logger?: StepLogger;
  metrics?: HandlerMetrics;
  clock?: Clock;
  fetch?: typeof fetch;
}

/** The metrics port plus the flush at the end of each invocation. */
export interface HandlerMetrics {
  add: StepMetrics['add'];
  flush(): void;
}

/** What the handler uses of the Lambda context: the time left bounds the step's requests. */
export type InvocationContext = Pick<LambdaContext, 'getRemainingTimeInMillis'> & Partial<LambdaContext>;

interface Built {
  config: FetchPageConfig;
  sql: Sql;
  /** The API key as read now: from the cache within its TTL, or again from Secrets Manager (`fresh`). */
  apiKey: (fresh: boolean) => Promise<string>;
  run: (apiKey: string, event: unknown, invocation: StepInvocation) => Promise<StepOutput | PlanOutput>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/**
 * Builds the Lambda handler. Clients are created on the first invocation and kept for the
 * container's life (one database connection). The API key is read again after its TTL
 * (SECRET_TTL_MS), and at once when the upstream refuses it: a key rotated in Secrets Manager is
 * used from the invocation that meets the refusal on, which is then run again with it.
 * Configuration errors surface as a named `ConfigError` from the invocation, so the state machine
 * fails with a clear cause instead of an opaque init crash.
 */
export function createHandler(options: HandlerOptions = {}) {
  const powertools = options.logger ? null : new Logger({ serviceName: 'fetch-page' });
  const logger = options.logger ?? stepLoggerOf(powertools as Logger);
  const metrics = options.metrics ?? powertoolsMetrics();
  const clock = options.clock ?? realClock;
  let built: Promise<Built> | undefined;

  async function build(): Promise<Built> {
    const config = options.config ? parseConfig(options.config) : loadConfig(options.env ?? process.env);
    const secrets = new SecretCache(options.secretsManager ?? new SecretsManagerClient({}), {
      now: clock.now,
    });
    const keyArn = config.apiKeySecretArn;
    const apiKey = async (fresh: boolean) => {
      if (!keyArn) return config.apiKey as string;
      const envName = 'DATASYNC_API_KEY_SECRET_ARN';
      const value = await (fresh ? secrets.refresh(keyArn, envName) : secrets.get(keyArn, envName));
      return parseApiKeySecret(value, keyArn);
    };
    await apiKey(false); // a missing or placeholder key fails the cold start, before the database
    const sql = await openDatabase(config, secrets, 'datasync-fetch-page');
    // One pacer row per upstream: every chain of every source that reads this API shares it.
    const store = createStore(sql, { pacerKey: config.apiUrl });
    let upstream: { key: string; client: ReturnType<typeof createDataSyncClient> } | undefined;
    const run = (key: string, event: unknown, invocation: StepInvocation) => {
      if (upstream?.key !== key) {
        const client = createDataSyncClient({
          baseUrl: config.apiUrl,
          apiKey: key,
          timeoutMs: config.requestTimeoutMs,
          ...(options.fetch ? { fetch: options.fetch } : {}),
        });
        upstream = { key, client };
      }
      const deps = { store, upstream: upstream.client, clock, logger, metrics, config };
      return runAction(deps, event, invocation);
    };
    return { config, sql, apiKey, run };
  }

  const handler = async (event: unknown, context?: InvocationContext): Promise<StepOutput | PlanOutput> => {
    // What Powertools' injectLambdaContext does: request id, cold start and function on every line.
    if (powertools && context?.awsRequestId) powertools.addContext(context as LambdaContext);
    const deadlineMs = context ? clock.now() + context.getRemainingTimeInMillis() : undefined;
    try {
      built ??= build();
      const ready = await built.catch((error: unknown) => {
        built = undefined; // a failed cold start (bad secret, say) is retried on the next invocation
        throw error;
      });
      const invocation = deadlineMs === undefined ? {} : { deadlineMs };
      const key = await ready.apiKey(false);
      try {
        return await ready.run(key, event, invocation);
      } catch (error) {
        if (!(error instanceof AuthError) || !ready.config.apiKeySecretArn) throw error;
        // Refused: the key may have been rotated since this container read it. Read it again;
        // only a different key is worth a second attempt, the same one fails as before.
        const fresh = await ready.apiKey(true);
        if (fresh === key) throw error;
        logger.warn('the API key was refused; a new one is in Secrets Manager, running again with it', {
          errorName: error.name,
        });
        return await ready.run(fresh, event, invocation);
      }
    } catch (error) {
      const named = toNamedError(error);
      // Not `message`: Powertools reserves that key for the line's own message and drops the field.
      logger.error('fetch-page failed', {
        errorName: named.name,
        errorMessage: named.message,
        transient: named instanceof DataSyncError ? named.transient : undefined,
      });
      throw named;
    } finally {
      metrics.flush();
    }
  };

  return Object.assign(handler, {
    /**
     * Closes the database connection (local runs and tests; Lambda just freezes the container).
     * The next invocation builds anew, cold: the local executor resets a timed-out invocation's
     * sandbox with it, as Lambda replaces that sandbox.
     */
    async close() {
      const ready = await built?.catch(() => undefined);
      built = undefined;
      await ready?.sql.end({ timeout: 5 });
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

function stepLoggerOf(logger: Logger): StepLogger {
  return {
    info: (m, f) => logger.info(m, f ?? {}),
    warn: (m, f) => logger.warn(m, f ?? {}),
    error: (m, f) => logger.error(m, f ?? {}),
  };
}

function powertoolsMetrics(): HandlerMetrics {
  const metrics = new Metrics({ serviceName: 'fetch-page' });
  return {
    add: (name, unit, value) =>
      metrics.addMetric(name, unit === 'Count' ? MetricUnit.Count : MetricUnit.Milliseconds, value),
    // An invocation that stored nothing (a wait, a failure) has nothing to publish; publishing
    // anyway makes Powertools warn "No application metrics to publish" on every such line.
    flush: () => {
      if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
    },
  };
}

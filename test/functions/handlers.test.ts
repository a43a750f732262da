import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createHandler } from '#functions/fetch-page/handler.ts';
import { createMigrateHandler } from '#functions/migrate/handler.ts';
import { ConfigError, InvocationDeadlineError } from '#shared/errors.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { type RunningSimulator, startSimulator } from '../../local/simulator/index.ts';

const API_KEY = 'sk-test-0123456789abcdef-very-secret';
const DB_PASSWORD = 'pw-should-never-be-logged';

let db: TestDatabase;
let sim: RunningSimulator;
const sm = mockClient(SecretsManagerClient);

beforeAll(async () => {
  db = await createTestDatabase('dsi_handler');
  sim = await startSimulator({ port: 0, latencyMs: 0, events: 12_000, apiKey: API_KEY, rateLimit: 0 });
});
afterAll(async () => {
  await sim?.close();
  await db?.drop();
});
afterEach(() => {
  sm.reset();
  vi.restoreAllMocks();
});

const dbSecret = () => {
  const u = new URL(db.url);
  return JSON.stringify({
    engine: 'postgres',
    host: u.hostname,
    port: Number(u.port || 5432),
    username: decodeURIComponent(u.username) || 'postgres',
    password: DB_PASSWORD,
    dbname: u.pathname.slice(1),
    ssl: false,
  });
};

describe('fetch-page handler configuration', () => {
  it.each([
    [{}, 'DATASYNC_API_URL'],
    [{ DATASYNC_API_URL: 'not a url' }, 'DATASYNC_API_URL'],
    [{ DATASYNC_API_URL: 'https://h/api/v1', DATABASE_URL: 'postgres://x/y' }, 'DATASYNC_API_KEY'],
    [{ DATASYNC_API_URL: 'https://h/api/v1', DATASYNC_API_KEY: 'k' }, 'DATABASE_SECRET_ARN'],
    [
      {
        DATASYNC_API_URL: 'https://h/api/v1',
        DATASYNC_API_KEY: 'k',
        DATABASE_URL: 'postgres://x/y',
        PAGE_SIZE: '9000',
      },
      'PAGE_SIZE',
    ],
    [
      {
        DATASYNC_API_URL: 'https://h/api/v1',
        DATASYNC_API_KEY: 'k',
        DATABASE_URL: 'postgres://x/y',
        RATE_LIMIT_MARGIN_MS: '-5',
      },
      'RATE_LIMIT_MARGIN_MS',
    ],
    [
      {
        DATASYNC_API_URL: 'https://h/api/v1',
        DATASYNC_API_KEY: 'k',
        DATABASE_URL: 'postgres://x/y',
        CURSOR_REFRESH_MARGIN_MS: '120000',
      },
      'CURSOR_REFRESH_MARGIN_MS',
    ],
  ])('a bad environment %j fails with a ConfigError naming %s', async (env, name) => {
    const handler = createHandler({ env, logger: quiet(), metrics: noMetrics() });
    const err = await handler({ executionId: 'x', state: {} }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.name).toBe('ConfigError');
    expect(err.message).toContain(name);
  });

  it('bad input is a ConfigError that says what to send', async () => {
    const handler = createHandler({
      env: { DATASYNC_API_URL: sim.url, DATASYNC_API_KEY: API_KEY, DATABASE_URL: db.url },
      logger: quiet(),
      metrics: noMetrics(),
    });
    const err = await handler({ executionId: 'x', state: { sourceId: 'bad source id!' } }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toMatch(/sourceId/);
    await handler.close();
  });
});

describe('fetch-page handler with Secrets Manager (mocked SDK client)', () => {
  // The test server uses trust auth, so the secret's password is accepted: the point is that it is never printed.
  it('reads each secret once per container and never logs a secret', async () => {
    sm.on(GetSecretValueCommand, { SecretId: 'arn:key' }).resolves({ SecretString: API_KEY });
    sm.on(GetSecretValueCommand, { SecretId: 'arn:db' }).resolves({ SecretString: dbSecret() });
    await createMigrateHandler({ env: { DATABASE_URL: db.url } })();

    const written: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    // The real Powertools logger and EMF metrics, writing to stdout as in Lambda.
    const handler = createHandler({
      env: {
        DATASYNC_API_URL: sim.url,
        DATASYNC_API_KEY_SECRET_ARN: 'arn:key',
        DATABASE_SECRET_ARN: 'arn:db',
        MIN_REQUEST_SPACING_MS: '0',
        POWERTOOLS_METRICS_NAMESPACE: 'DataSyncIngestTest',
        POWERTOOLS_SERVICE_NAME: 'fetch-page',
      },
      secretsManager: new SecretsManagerClient({ region: 'us-east-1' }),
    });
    let state: Record<string, unknown> = { sourceId: 'default' };
    for (let i = 0; i < 3; i++) {
      const out = await handler({ executionId: 'exec-1', state });
      state = out;
      if (out.done) break;
    }
    await handler.close();
    vi.restoreAllMocks();

    expect(state).toMatchObject({ done: true, totals: { inserted: 12_000, pages: 3 } });
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(2);
    const output = written.join('');
    expect(output).toContain('page stored'); // the logs were captured at all
    expect(output).toContain('"EventsInserted"'); // and the EMF metrics
    expect(output).not.toContain(API_KEY);
    expect(output).not.toContain(DB_PASSWORD);
  });

  it('an unreadable secret is a ConfigError naming the variable, and the next invocation tries again', async () => {
    sm.on(GetSecretValueCommand, { SecretId: 'arn:key' })
      .rejectsOnce(Object.assign(new Error('denied'), { name: 'AccessDeniedException' }))
      .resolves({ SecretString: '' });
    const handler = createHandler({
      env: { DATASYNC_API_URL: sim.url, DATASYNC_API_KEY_SECRET_ARN: 'arn:key', DATABASE_URL: db.url },
      secretsManager: new SecretsManagerClient({ region: 'us-east-1' }),
      logger: quiet(),
      metrics: noMetrics(),
    });
    const first = await handler({ executionId: 'e', state: {} }).catch((e) => e);
    expect(first).toBeInstanceOf(ConfigError);
    expect(first.message).toContain('DATASYNC_API_KEY_SECRET_ARN');
    expect(first.message).toContain('AccessDeniedException');
    const second = await handler({ executionId: 'e', state: {} }).catch((e) => e);
    expect(second).toBeInstanceOf(ConfigError);
    expect(second.message).toMatch(/no string value|empty/);
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(2);
  });
});

describe('fetch-page handler in Lambda: context, logs and metrics (real Powertools writing to captured streams)', () => {
  function captureOutput() {
    const lines: string[] = [];
    const keep = (chunk: string | Uint8Array) => {
      lines.push(
        ...String(chunk)
          .split('\n')
          .filter((l) => l.trim() !== ''),
      );
      return true;
    };
    vi.spyOn(process.stdout, 'write').mockImplementation(keep);
    vi.spyOn(process.stderr, 'write').mockImplementation(keep);
    return {
      lines,
      json: () =>
        lines.flatMap((l) => {
          try {
            return [JSON.parse(l) as Record<string, unknown>];
          } catch {
            return [];
          }
        }),
    };
  }

  function lambdaContext(requestId: string, remainingMs = 60_000) {
    return {
      awsRequestId: requestId,
      functionName: 'datasync-fetch-page',
      functionVersion: '$LATEST',
      invokedFunctionArn: 'arn:aws:lambda:eu-west-1:123456789012:function:datasync-fetch-page',
      memoryLimitInMB: '512',
      getRemainingTimeInMillis: () => remainingMs,
    };
  }

  it('the failure log carries the error’s name and message, with the request id and cold start on the line', async () => {
    vi.stubEnv('POWERTOOLS_METRICS_NAMESPACE', 'DataSyncIngestTest');
    // Lambda sets it; Powertools reports a cold start only for on-demand initialisation.
    vi.stubEnv('AWS_LAMBDA_INITIALIZATION_TYPE', 'on-demand');
    const out = captureOutput();
    const handler = createHandler({ env: { DATASYNC_API_URL: 'not a url' } });
    const first = await handler({ executionId: 'x', state: {} }, lambdaContext('req-1')).catch((e) => e);
    const second = await handler({ executionId: 'x', state: {} }, lambdaContext('req-2')).catch((e) => e);
    vi.restoreAllMocks();
    vi.unstubAllEnvs();

    expect(first).toBeInstanceOf(ConfigError);
    expect(second).toBeInstanceOf(ConfigError);
    const failures = out.json().filter((l) => l.message === 'fetch-page failed');
    expect(failures).toHaveLength(2);
    expect(failures[0]).toMatchObject({
      level: 'ERROR',
      errorName: 'ConfigError',
      transient: false,
      function_request_id: 'req-1',
      cold_start: true,
      function_name: 'datasync-fetch-page',
    });
    expect(String(failures[0]!.errorMessage)).toContain('DATASYNC_API_URL');
    expect(failures[1]).toMatchObject({ function_request_id: 'req-2', cold_start: false });
    // Nothing was measured in these invocations, and nothing warns about it.
    expect(out.lines.join('\n')).not.toContain('No application metrics to publish');
  });

  it('bounds the step by the invocation’s remaining time: too little left fails transiently before any request', async () => {
    await createMigrateHandler({ env: { DATABASE_URL: db.url } })();
    const before = sim.stats().requests;
    const handler = createHandler({
      env: {
        DATASYNC_API_URL: sim.url,
        DATASYNC_API_KEY: API_KEY,
        DATABASE_URL: db.url,
        WRITE_HEADROOM_MS: '5000',
      },
      logger: quiet(),
      metrics: noMetrics(),
    });
    try {
      const err = await handler(
        { executionId: 'short', state: { sourceId: 'short' } },
        lambdaContext('r', 4_000),
      ).catch((e) => e);
      expect(err).toBeInstanceOf(InvocationDeadlineError);
      expect(err.transient).toBe(true);
      expect(sim.stats().requests).toBe(before);
      // With the full minute the same invocation goes ahead.
      const out = await handler({ executionId: 'short', state: { sourceId: 'short' } }, lambdaContext('r2'));
      expect('page' in out && out.page.received).toBeGreaterThan(0);
    } finally {
      await handler.close();
    }
  });
});

describe('migrate handler', () => {
  it('applies the migrations from the RDS secret and is idempotent', async () => {
    const fresh = await createTestDatabase('dsi_migrate_fn');
    try {
      const u = new URL(fresh.url);
      sm.on(GetSecretValueCommand, { SecretId: 'arn:db2' }).resolves({
        SecretString: JSON.stringify({
          host: u.hostname,
          port: Number(u.port || 5432),
          username: decodeURIComponent(u.username) || 'postgres',
          password: '',
          dbname: fresh.name,
          ssl: false,
        }),
      });
      const migrate = createMigrateHandler({
        env: { DATABASE_SECRET_ARN: 'arn:db2' },
        secretsManager: new SecretsManagerClient({ region: 'us-east-1' }),
      });
      const first = await migrate();
      expect(first.applied).toBeGreaterThan(0);
      expect(await migrate()).toEqual({ applied: 0 });
    } finally {
      await fresh.drop();
    }
  });

  it('without a database setting it is a ConfigError naming both variables', async () => {
    const err = await createMigrateHandler({ env: {} })().catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain('DATABASE_SECRET_ARN');
    expect(err.message).toContain('DATABASE_URL');
  });
});

function quiet() {
  return { info: () => {}, warn: () => {}, error: () => {} };
}
function noMetrics() {
  return { add: () => {}, flush: () => {} };
}

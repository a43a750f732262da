import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStatusHandler } from '#functions/status/handler.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { ConfigError } from '#shared/errors.ts';
import { statusResponseSchema } from '#shared/status/view.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

let db: TestDatabase;
const DB_SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf';

beforeAll(async () => {
  db = await createTestDatabase('dsi_status');
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    await runMigrations(sql);
    // A checkpoint mid-run, just after a 429: the state an operator most often asks about.
    await sql`
      insert into checkpoints (source_id, pages, events_inserted, rejected, requests, rate_limited,
        total_reported, next_request_at, last_rate_limit, status, last_error, lease_owner, lease_expires_at)
      values ('default', 120, 600000, 3, 125, 2, 3000000, to_timestamp(1800000000),
        '{"limit":10,"remaining":0,"resetSeconds":41}', 'running', 'UpstreamUnavailableError: 503',
        'arn:aws:states:us-east-1:123456789012:execution:x:y', to_timestamp(1800000180))`;
  } finally {
    await sql.end();
  }
});
afterAll(async () => {
  await db?.drop();
});

describe('status function', () => {
  it("returns the checkpoint's view: events of the total, last error and rate-limit state", async () => {
    const handler = createStatusHandler({ env: { DATABASE_URL: db.url } });
    try {
      const out = statusResponseSchema.parse(await handler({ sourceId: 'default' }));
      expect(out.checkpoint).toMatchObject({
        sourceId: 'default',
        eventsInserted: 600_000,
        totalReported: 3_000_000,
        pages: 120,
        rejected: 3,
        status: 'running',
        lastError: 'UpstreamUnavailableError: 503',
        requests: 125,
        rateLimited: 2,
        lastRateLimit: { limit: 10, remaining: 0, resetSeconds: 41 },
        nextRequestAtMs: 1_800_000_000_000,
        leaseExpiresAtMs: 1_800_000_180_000,
        // Before a plan the source is its own row: one chain, mode not decided yet.
        mode: null,
        chains: [
          {
            chain: 0,
            hi: null,
            lo: null,
            position: null,
            pages: 120,
            inserted: 600_000,
            rangeDone: false,
            leased: true,
          },
        ],
      });
      expect(await handler({ sourceId: 'other' })).toEqual({ checkpoint: null });
      // No sourceId: the default source, as the state machine's input defaults it.
      expect((await handler({})).checkpoint?.sourceId).toBe('default');
    } finally {
      await handler.close();
    }
  });

  it('reads the database through the RDS secret when deployed', async () => {
    const sm = mockClient(SecretsManagerClient);
    const u = new URL(db.url);
    sm.on(GetSecretValueCommand, { SecretId: DB_SECRET_ARN }).resolves({
      SecretString: JSON.stringify({
        host: u.hostname,
        port: Number(u.port || 5432),
        username: decodeURIComponent(u.username) || 'postgres',
        password: '',
        dbname: u.pathname.slice(1),
        ssl: false,
      }),
    });
    const handler = createStatusHandler({
      env: { DATABASE_SECRET_ARN: DB_SECRET_ARN },
      secretsManager: new SecretsManagerClient({ region: 'us-east-1' }),
    });
    try {
      expect((await handler({ sourceId: 'default' })).checkpoint?.eventsInserted).toBe(600_000);
      expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(1);
    } finally {
      await handler.close();
      sm.restore();
    }
  });

  it('names the fix for a bad source id and for missing configuration', async () => {
    const handler = createStatusHandler({ env: { DATABASE_URL: db.url } });
    try {
      await expect(handler({ sourceId: 'no spaces allowed' })).rejects.toThrow(
        /Invalid input to the status function[\s\S]*sourceId[\s\S]*\{"sourceId":"default"\}/,
      );
    } finally {
      await handler.close();
    }
    await expect(createStatusHandler({ env: {} })({})).rejects.toBeInstanceOf(ConfigError);
    await expect(createStatusHandler({ env: {} })({})).rejects.toThrow(/set DATABASE_SECRET_ARN/);
  });
});

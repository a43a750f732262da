import net from 'node:net';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHandler } from '#functions/fetch-page/handler.ts';
import { createMigrateHandler } from '#functions/migrate/handler.ts';
import { openDatabase } from '#shared/aws/database.ts';
import { SecretCache } from '#shared/aws/secrets.ts';
import { ConfigError } from '#shared/errors.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { type RunningSimulator, startSimulator } from '../../local/simulator/index.ts';

/*
 * What the deployed functions do with the database and the API key that local runs never show:
 * least-privilege roles made by the migration, a first connection that waits for a paused
 * database, and an API key rotated while containers are warm.
 */

const sm = mockClient(SecretsManagerClient);
const client = () => new SecretsManagerClient({ region: 'us-east-1' });
let db: TestDatabase;
afterEach(() => sm.reset());
beforeAll(async () => {
  db = await createTestDatabase('dsi_deployed');
});
afterAll(async () => {
  await db?.drop();
});

/** The RDS secret's JSON for `username` on the test database (trust auth: any password is taken). */
function secretFor(username: string, port?: number) {
  const u = new URL(db.url);
  return JSON.stringify({
    host: u.hostname,
    port: port ?? Number(u.port || 5432),
    username,
    password: `pw-${username}`,
    dbname: u.pathname.slice(1),
    ssl: false,
  });
}
const adminUser = () => decodeURIComponent(new URL(db.url).username) || 'postgres';

describe('database roles made by the migration', () => {
  const writer = `dsi_writer_${process.pid}`;
  const reader = `dsi_reader_${process.pid}`;
  const asRole = (role: string) => {
    const u = new URL(db.url);
    u.username = role;
    u.password = `pw-${role}`;
    return postgres(u.toString(), { max: 1, onnotice: () => {} });
  };

  afterAll(async () => {
    const admin = postgres(db.url, { max: 1, onnotice: () => {} });
    for (const role of [writer, reader]) {
      await admin.unsafe(`drop owned by ${role}`).catch(() => undefined);
      await admin.unsafe(`drop role if exists ${role}`).catch(() => undefined);
    }
    await admin.end();
  });

  it('gives fetch-page a writer that reads and writes rows but no DDL, and status a reader that only reads', async () => {
    sm.on(GetSecretValueCommand, { SecretId: 'arn:master' }).resolves({
      SecretString: secretFor(adminUser()),
    });
    sm.on(GetSecretValueCommand, { SecretId: 'arn:writer' }).resolves({ SecretString: secretFor(writer) });
    sm.on(GetSecretValueCommand, { SecretId: 'arn:reader' }).resolves({ SecretString: secretFor(reader) });
    const migrate = createMigrateHandler({
      env: {
        DATABASE_SECRET_ARN: 'arn:master',
        DATABASE_WRITER_SECRET_ARN: 'arn:writer',
        DATABASE_READER_SECRET_ARN: 'arn:reader',
      },
      secretsManager: client(),
    });
    expect((await migrate()).roles).toEqual([writer, reader]);
    // Again: the roles exist now, their passwords are set again and the grants repeated.
    expect(await migrate()).toEqual({ applied: 0, roles: [writer, reader] });

    const w = asRole(writer);
    const r = asRole(reader);
    try {
      expect(await w`select count(*)::int as n from checkpoints`).toEqual([{ n: 0 }]);
      await w`update checkpoints set source_id = source_id where false`;
      await w`delete from events where false`;
      await expect(w`create table intruder (id int)`).rejects.toMatchObject({ code: '42501' });
      await expect(w`drop table events`).rejects.toMatchObject({ code: '42501' });
      await expect(w`select * from drizzle.__drizzle_migrations`).rejects.toMatchObject({ code: '42501' });

      expect(await r`select count(*)::int as n from events`).toEqual([{ n: 0 }]);
      await expect(r`delete from events where false`).rejects.toMatchObject({ code: '42501' });
      await expect(r`update checkpoints set source_id = source_id where false`).rejects.toMatchObject({
        code: '42501',
      });
      const [setting] = await r<{ v: string }[]>`select current_setting('idle_session_timeout') as v`;
      expect(setting?.v).toBe('1min');
    } finally {
      await w.end();
      await r.end();
    }
  });

  it('refuses one role secret without the other, naming both variables', async () => {
    const err = await createMigrateHandler({
      env: { DATABASE_URL: db.url, DATABASE_WRITER_SECRET_ARN: 'arn:writer' },
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/DATABASE_WRITER_SECRET_ARN and DATABASE_READER_SECRET_ARN/);
  });
});

describe('the first connection of a deployed function', () => {
  it('waits for a database that starts answering late (a paused Aurora resuming) instead of failing', async () => {
    // A port that refuses connections until the "resume", then forwards to the test server.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const target = new URL(db.url);
    const proxy = net.createServer((socket) => {
      const upstream = net.connect(Number(target.port || 5432), target.hostname);
      socket.pipe(upstream).pipe(socket);
      socket.on('error', () => upstream.destroy());
      upstream.on('error', () => socket.destroy());
    });
    let attempts = 0;
    sm.on(GetSecretValueCommand, { SecretId: 'arn:db' }).resolves({
      SecretString: secretFor(adminUser(), port),
    });
    const opening = openDatabase({ databaseSecretArn: 'arn:db' }, new SecretCache(client()), 'resume-test', {
      retryPauseMs: 200,
      resumeWaitMs: 30_000,
      sleep: async (ms) => {
        attempts++;
        if (attempts === 3) await new Promise<void>((resolve) => proxy.listen(port, '127.0.0.1', resolve));
        await new Promise((resolve) => setTimeout(resolve, ms));
      },
    });
    const sql = await opening;
    try {
      expect(attempts).toBeGreaterThanOrEqual(3);
      expect(await sql`select 1 as one`).toEqual([{ one: 1 }]);
    } finally {
      await sql.end();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });

  it('gives up after the wait with the transient DatabaseUnavailableError, so the state machine retries', async () => {
    sm.on(GetSecretValueCommand, { SecretId: 'arn:db' }).resolves({
      SecretString: secretFor(adminUser(), 9),
    });
    let now = 0;
    const err = await openDatabase(
      { databaseSecretArn: 'arn:db' },
      new SecretCache(client()),
      'resume-test',
      {
        resumeWaitMs: 10_000,
        retryPauseMs: 2000,
        now: () => now,
        sleep: async (ms) => {
          now += ms;
        },
      },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'DatabaseUnavailableError', transient: true });
    expect(now).toBe(8000);
  });

  it('refuses a DATABASE_CA_FILE that holds no certificate, naming the file and the fix', async () => {
    const err = await openDatabase(
      { databaseUrl: db.url, databaseCaFile: import.meta.filename },
      new SecretCache(client()),
      'ca-test',
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(`DATABASE_CA_FILE=${import.meta.filename}`);
    expect((err as Error).message).toMatch(/holds no PEM certificate/);
  });
});

describe('an API key rotated while containers are warm', () => {
  const OLD_KEY = 'sk-old-0123456789abcdef';
  const NEW_KEY = 'sk-new-0123456789abcdef';
  let sim: RunningSimulator;
  beforeAll(async () => {
    sim = await startSimulator({ port: 0, latencyMs: 0, events: 5000, apiKey: NEW_KEY, rateLimit: 0 });
  });
  afterAll(async () => {
    await sim?.close();
  });

  it('reads the secret again when the API refuses the held key, and runs the page with the new one', async () => {
    await createMigrateHandler({ env: { DATABASE_URL: db.url } })();
    sm.on(GetSecretValueCommand, { SecretId: 'arn:key' })
      .resolvesOnce({ SecretString: OLD_KEY })
      .resolves({ SecretString: NEW_KEY });
    const quiet = { info() {}, warn() {}, error() {} };
    const handler = createHandler({
      env: {
        DATASYNC_API_URL: sim.url,
        DATASYNC_API_KEY_SECRET_ARN: 'arn:key',
        DATABASE_URL: db.url,
        MIN_REQUEST_SPACING_MS: '0',
      },
      secretsManager: client(),
      logger: quiet,
      metrics: { add() {}, flush() {} },
    });
    try {
      const out = await handler({ executionId: 'exec-rotate', state: { sourceId: 'rotated' } });
      expect(out).toMatchObject({ sourceId: 'rotated', page: { inserted: 5000 } });
      expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(2);
    } finally {
      await handler.close();
    }
  });

  it('still fails with AuthError when the secret holds the refused key', async () => {
    sm.on(GetSecretValueCommand, { SecretId: 'arn:key' }).resolves({ SecretString: OLD_KEY });
    const handler = createHandler({
      env: { DATASYNC_API_URL: sim.url, DATASYNC_API_KEY_SECRET_ARN: 'arn:key', DATABASE_URL: db.url },
      secretsManager: client(),
      logger: { info() {}, warn() {}, error() {} },
      metrics: { add() {}, flush() {} },
    });
    try {
      const err = await handler({ executionId: 'exec-refused', state: { sourceId: 'refused' } }).catch(
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ name: 'AuthError' });
      expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(2);
    } finally {
      await handler.close();
    }
  });
});

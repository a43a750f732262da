import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDatabaseSecret, SecretCache } from '#shared/aws/secrets.ts';
import { ConfigError, SecretsUnavailableError } from '#shared/errors.ts';

const sm = mockClient(SecretsManagerClient);
afterEach(() => sm.reset());

const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:datasync-api-key-AbCdEf';

function sdkError(name: string, message: string): Error {
  return Object.assign(new Error(message), { name, $fault: 'client', $metadata: {} });
}

async function readWith(error: Error): Promise<Error> {
  sm.on(GetSecretValueCommand).rejects(error);
  const cache = new SecretCache(new SecretsManagerClient({ region: 'eu-west-1' }));
  return cache.get(ARN, 'DATASYNC_API_KEY_SECRET_ARN').then(
    () => new Error('the read succeeded'),
    (e: unknown) => e as Error,
  );
}

describe('reading a secret', () => {
  it.each([
    ['AccessDeniedException', /grant secretsmanager:GetSecretValue/],
    ['ResourceNotFoundException', /no such secret in this region/],
    ['DecryptionFailure', /kms:Decrypt/],
  ])('%s is a configuration error naming the secret, the variable and the fix', async (name, fix) => {
    const err = await readWith(sdkError(name, 'refused'));
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).transient).toBe(false);
    expect(err.message).toContain(ARN);
    expect(err.message).toContain('DATASYNC_API_KEY_SECRET_ARN');
    expect(err.message).toContain(name);
    expect(err.message).toMatch(fix);
  });

  it.each([
    sdkError('ThrottlingException', 'Rate exceeded'),
    sdkError('InternalServiceError', 'internal error'),
    Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:443'), { code: 'ECONNREFUSED' }),
    Object.assign(new Error('socket hang up'), { name: 'TimeoutError', code: 'ETIMEDOUT' }),
  ])('%s is transient (SecretsUnavailableError), so the state machine retries it', async (error) => {
    const err = await readWith(error);
    expect(err).toBeInstanceOf(SecretsUnavailableError);
    expect((err as SecretsUnavailableError).transient).toBe(true);
    expect(err.name).toBe('SecretsUnavailableError');
    expect(err.message).toContain(ARN);
    expect(err.message).toContain(error.message);
  });

  it('an endpoint that refuses connections (a real socket, no mock) is transient, and the next read tries again', async () => {
    sm.restore();
    try {
      const client = new SecretsManagerClient({
        region: 'eu-west-1',
        endpoint: 'http://127.0.0.1:9',
        maxAttempts: 1,
        credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
      });
      const cache = new SecretCache(client);
      const read = () =>
        cache.get(ARN, 'DATASYNC_API_KEY_SECRET_ARN').then(
          () => new Error('the read succeeded'),
          (e: unknown) => e as Error,
        );
      const first = await read();
      expect(first).toBeInstanceOf(SecretsUnavailableError);
      expect(first.message).toMatch(/ECONNREFUSED/);
      const second = await read();
      expect(second).toBeInstanceOf(SecretsUnavailableError);
      expect(second).not.toBe(first);
    } finally {
      sm.reset();
    }
  });

  it('a database secret that is not the RDS JSON names the fields, never the password', () => {
    const secret = JSON.stringify({ host: 'db', port: 5432, password: 'hunter2-very-secret', dbname: 'x' });
    const err = (() => {
      try {
        parseDatabaseSecret(secret, 'arn:db');
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect(err?.message).toContain('username');
    expect(err?.message).not.toContain('hunter2');
  });
});

describe('how long a read is trusted', () => {
  it('serves a read within the TTL from the cache, reads again after it, and at once on refresh', async () => {
    sm.on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: 'key-1' })
      .resolvesOnce({ SecretString: 'key-2' })
      .resolves({ SecretString: 'key-3' });
    let now = 0;
    const cache = new SecretCache(new SecretsManagerClient({ region: 'eu-west-1' }), {
      ttlMs: 300_000,
      now: () => now,
    });
    expect(await cache.get(ARN, 'DATASYNC_API_KEY_SECRET_ARN')).toBe('key-1');
    now = 299_999;
    expect(await cache.get(ARN, 'DATASYNC_API_KEY_SECRET_ARN')).toBe('key-1');
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(1);
    now = 300_000;
    expect(await cache.get(ARN, 'DATASYNC_API_KEY_SECRET_ARN')).toBe('key-2');
    expect(await cache.refresh(ARN, 'DATASYNC_API_KEY_SECRET_ARN')).toBe('key-3');
    expect(await cache.get(ARN, 'DATASYNC_API_KEY_SECRET_ARN')).toBe('key-3');
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(3);
  });

  it('trusts a read for five minutes by default (a rotated key is picked up within that)', async () => {
    sm.on(GetSecretValueCommand).resolvesOnce({ SecretString: 'old' }).resolves({ SecretString: 'new' });
    let now = 1_000_000;
    const cache = new SecretCache(new SecretsManagerClient({ region: 'eu-west-1' }), { now: () => now });
    expect(await cache.get(ARN, 'DATASYNC_API_KEY_SECRET_ARN')).toBe('old');
    now += 5 * 60_000;
    expect(await cache.get(ARN, 'DATASYNC_API_KEY_SECRET_ARN')).toBe('new');
  });
});

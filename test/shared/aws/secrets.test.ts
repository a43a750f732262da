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

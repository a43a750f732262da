import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import { ConfigError, SecretsUnavailableError } from '../errors.ts';

/** How long a warm container trusts a secret it read: a rotated API key is picked up within this. */
export const SECRET_TTL_MS = 5 * 60_000;

/** Options of {@link SecretCache}. */
export interface SecretCacheOptions {
  /** A read older than this is read again at the next `get`. @default SECRET_TTL_MS */
  ttlMs?: number;
  /** @default Date.now */
  now?: () => number;
}

/**
 * Reads secrets at most once per TTL per container: a warm Lambda calls Secrets Manager again
 * only when its copy is older than the TTL or `refresh` says the value was refused (a rotated
 * API key), and a cold start makes at most one call per secret even when asked concurrently.
 */
export class SecretCache {
  readonly #client: SecretsManagerClient;
  readonly #cache = new Map<string, { value: Promise<string>; readAt: number }>();
  readonly #ttlMs: number;
  readonly #now: () => number;

  constructor(client: SecretsManagerClient, options: SecretCacheOptions = {}) {
    this.#client = client;
    this.#ttlMs = options.ttlMs ?? SECRET_TTL_MS;
    this.#now = options.now ?? Date.now;
  }

  get(secretId: string, envName: string): Promise<string> {
    const cached = this.#cache.get(secretId);
    if (cached && this.#now() - cached.readAt < this.#ttlMs) return cached.value;
    return this.#read(secretId, envName);
  }

  /** Reads the secret again now, whatever its age: after the upstream refused the value held. */
  refresh(secretId: string, envName: string): Promise<string> {
    return this.#read(secretId, envName);
  }

  #read(secretId: string, envName: string): Promise<string> {
    const value = this.#fetch(secretId, envName);
    const entry = { value, readAt: this.#now() };
    this.#cache.set(secretId, entry);
    // A failed read must not be cached: the next invocation tries again.
    value.catch(() => {
      if (this.#cache.get(secretId) === entry) this.#cache.delete(secretId);
    });
    return value;
  }

  async #fetch(secretId: string, envName: string): Promise<string> {
    let out: { SecretString?: string | undefined };
    try {
      out = await this.#client.send(new GetSecretValueCommand({ SecretId: secretId }));
    } catch (error) {
      throw secretReadError(error, secretId, envName);
    }
    if (!out.SecretString) {
      throw new ConfigError(
        `The secret named by ${envName} (${secretId}) has no string value. Put one in with ` +
          `\`aws secretsmanager put-secret-value --secret-id ${secretId} --secret-string ...\`.`,
      );
    }
    return out.SecretString;
  }
}

/**
 * What a failed read means. Only an answer about the secret itself (no permission, no such
 * secret, a key that cannot decrypt it) is a configuration error that a retry cannot fix;
 * throttling, timeouts, a service error or an unreachable endpoint pass, so the state machine
 * retries them.
 */
const CONFIGURATION_FAULTS: Record<string, string> = {
  AccessDeniedException:
    "the function's role may not read it: grant secretsmanager:GetSecretValue on it (the stack does, with secret.grantRead)",
  ResourceNotFoundException:
    'there is no such secret in this region: check the ARN in the variable and that the secret was not deleted',
  DecryptionFailure:
    "Secrets Manager cannot decrypt it with its KMS key: grant the function's role kms:Decrypt on that key",
};

function secretReadError(error: unknown, secretId: string, envName: string): Error {
  const name = error instanceof Error ? error.name : 'Error';
  const code = (error as { code?: unknown }).code;
  const said = `${name}${typeof code === 'string' && code !== name ? ` (${code})` : ''}: ${error instanceof Error ? error.message : String(error)}`;
  const fix = CONFIGURATION_FAULTS[name];
  if (fix) {
    return new ConfigError(
      `Cannot read the secret named by ${envName} (${secretId}): ${said}. Fix: ${fix}.`,
      {
        cause: error,
      },
    );
  }
  return new SecretsUnavailableError(
    `Secrets Manager did not give the secret named by ${envName} (${secretId}): ${said}. This usually passes and ` +
      'the state machine retries it; if it persists, check that the function reaches Secrets Manager (NAT gateway or ' +
      'VPC endpoint) and the service health in this region.',
    { cause: error },
  );
}

/**
 * The API key secret holds either the bare key or JSON `{"apiKey": "..."}`: the first is what
 * the README tells users to put in, the second is what a console-created key/value secret gives.
 */
export function parseApiKeySecret(value: string, secretId: string): string {
  const trimmed = value.trim();
  if (trimmed.startsWith('{')) {
    const parsed = z.object({ apiKey: z.string().min(1) }).safeParse(safeJson(trimmed));
    if (!parsed.success) {
      throw new ConfigError(
        `The API key secret ${secretId} is JSON without a non-empty "apiKey" field. Store the bare key, or {"apiKey":"<key>"}.`,
      );
    }
    return parsed.data.apiKey;
  }
  if (trimmed.length === 0 || trimmed === 'REPLACE_ME') {
    throw new ConfigError(
      `The API key secret ${secretId} is empty or still holds its placeholder. Put the DataSync API key in with ` +
        `\`aws secretsmanager put-secret-value --secret-id ${secretId} --secret-string <key>\`.`,
    );
  }
  return trimmed;
}

/** The RDS-generated secret (plus an optional `ssl` flag that only the LocalStack target sets to false). */
export const databaseSecretSchema = z.object({
  host: z.string().min(1),
  port: z.coerce.number().int().positive().default(5432),
  username: z.string().min(1),
  password: z.string(),
  dbname: z.string().min(1).default('postgres'),
  ssl: z.boolean().default(true),
});
export type DatabaseSecret = z.infer<typeof databaseSecretSchema>;

export function parseDatabaseSecret(value: string, secretId: string): DatabaseSecret {
  const parsed = databaseSecretSchema.safeParse(safeJson(value));
  if (!parsed.success) {
    throw new ConfigError(
      `The database secret ${secretId} (DATABASE_SECRET_ARN) is not the JSON RDS generates ` +
        `({host, port, username, password, dbname}); store that JSON in the secret.\n${z.prettifyError(parsed.error)}`,
    );
  }
  return parsed.data;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

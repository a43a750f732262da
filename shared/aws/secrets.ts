import { GetSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import { ConfigError } from '../errors.ts';

/**
 * Reads secrets once per container: a warm Lambda never calls Secrets Manager again, and a
 * cold start makes at most one call per secret even when asked concurrently.
 */
export class SecretCache {
  readonly #client: SecretsManagerClient;
  readonly #cache = new Map<string, Promise<string>>();

  constructor(client: SecretsManagerClient) {
    this.#client = client;
  }

  get(secretId: string, envName: string): Promise<string> {
    let pending = this.#cache.get(secretId);
    if (!pending) {
      pending = this.#fetch(secretId, envName);
      this.#cache.set(secretId, pending);
      // A failed read must not be cached forever: the next invocation tries again.
      pending.catch(() => this.#cache.delete(secretId));
    }
    return pending;
  }

  async #fetch(secretId: string, envName: string): Promise<string> {
    let out: { SecretString?: string | undefined };
    try {
      out = await this.#client.send(new GetSecretValueCommand({ SecretId: secretId }));
    } catch (error) {
      const name = (error as Error).name;
      throw new ConfigError(
        `Cannot read the secret named by ${envName} (${secretId}): ${name}: ${(error as Error).message}. ` +
          `Check that the secret exists in this region and that the function's role may read it.`,
        { cause: error },
      );
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
        `({host, port, username, password, dbname}): ${parsed.error.issues.map((i) => i.path.join('.') || i.message).join(', ')}.`,
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

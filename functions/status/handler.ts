import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Sql } from 'postgres';
import { z } from 'zod';
import { openDatabase } from '#shared/aws/database.ts';
import { SecretCache } from '#shared/aws/secrets.ts';
import { loadDatabaseConfig } from '#shared/config.ts';
import { getCheckpoint } from '#shared/db/checkpoints.ts';
import { ConfigError } from '#shared/errors.ts';
import { type StatusResponse, statusRequestSchema } from './view.ts';

/**
 * The status function: the checkpoint of one source, read inside the VPC, so an operator needs
 * no tunnel to the isolated database (`npm run ingest -- status` invokes it). Read-only.
 */
export function createStatusHandler(
  options: { env?: NodeJS.ProcessEnv; secretsManager?: SecretsManagerClient } = {},
) {
  let sql: Promise<Sql> | undefined;

  async function open(): Promise<Sql> {
    const database = loadDatabaseConfig(options.env ?? process.env, 'the status function');
    const secrets = new SecretCache(options.secretsManager ?? new SecretsManagerClient({}));
    return openDatabase(database, secrets, 'datasync-status');
  }

  const handler = async (event: unknown): Promise<StatusResponse> => {
    const request = statusRequestSchema.safeParse(event ?? {});
    if (!request.success) {
      throw new ConfigError(
        `Invalid input to the status function:\n${z.prettifyError(request.error)}\nInvoke it with {"sourceId":"default"}.`,
      );
    }
    sql ??= open().catch((error: unknown) => {
      sql = undefined; // a failed cold start is retried on the next invocation
      throw error;
    });
    const c = await getCheckpoint(await sql, request.data.sourceId);
    if (!c) return { checkpoint: null };
    return {
      checkpoint: {
        sourceId: c.sourceId,
        eventsInserted: c.eventsInserted,
        pages: c.pages,
        rejected: c.rejected,
        totalReported: c.totalReported,
        status: c.status,
        lastError: c.lastError,
        updatedAtMs: c.updatedAtMs,
        requests: c.requests,
        rateLimited: c.rateLimited,
        lastRateLimit: c.lastRateLimit,
        nextRequestAtMs: c.nextRequestAtMs,
        leaseOwner: c.leaseOwner,
        leaseExpiresAtMs: c.leaseExpiresAtMs,
      },
    };
  };

  return Object.assign(handler, {
    /** Closes the database connection (tests; Lambda just freezes the container). */
    async close() {
      const open = await sql?.catch(() => undefined);
      sql = undefined;
      await open?.end({ timeout: 5 });
    },
  });
}

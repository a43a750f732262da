import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Sql } from 'postgres';
import { z } from 'zod';
import { openDatabase } from '#shared/aws/database.ts';
import { SecretCache } from '#shared/aws/secrets.ts';
import { loadDatabaseConfig } from '#shared/config.ts';
import { listChains } from '#shared/db/chains.ts';
import { createDb, type Db } from '#shared/db/client.ts';
import { ConfigError } from '#shared/errors.ts';
import { type StatusResponse, statusRequestSchema, statusView } from '#shared/status/view.ts';
import type { Checkpoint } from '#shared/step/index.ts';

/**
 * The status function: the checkpoint rows of one source (its own and its chains'), read inside
 * the VPC, so an operator needs no tunnel to the isolated database (`npm run ingest -- status`
 * invokes it). Read-only.
 */
export function createStatusHandler(
  options: {
    env?: NodeJS.ProcessEnv;
    secretsManager?: SecretsManagerClient;
    /** The source's rows (tests); default: read from the database. */
    readRows?: (db: Db, sourceId: string) => Promise<Checkpoint[]>;
    /** Epoch ms, for which leases still hold. */
    now?: () => number;
  } = {},
) {
  const readRows = options.readRows ?? listChains;
  const now = options.now ?? Date.now;
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
    const rows = await readRows(createDb(await sql), request.data.sourceId);
    return { checkpoint: statusView(rows, now()) };
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

/**
 * Child process of tls.test.ts: the CA under test reaches Node's trust store only through
 * NODE_EXTRA_CA_CERTS, read at process start (as on Lambda), so the connections are made here.
 * argv[2] is a JSON array of cases; prints one JSON array of outcomes.
 */

import { openDatabase } from '#shared/aws/database.ts';
import type { SecretCache } from '#shared/aws/secrets.ts';
import type { DatabaseSsl } from '#shared/db/client.ts';
import { withDbErrors } from '#shared/db/connection-errors.ts';

interface ProbeCase {
  name: string;
  url?: string;
  secret?: Record<string, unknown>;
  ssl?: DatabaseSsl;
}

const cases = JSON.parse(process.argv[2] ?? '[]') as ProbeCase[];
const outcomes: { name: string; ok: boolean; error?: string; message?: string }[] = [];
for (const c of cases) {
  const secrets = { get: async () => JSON.stringify(c.secret) } as unknown as SecretCache;
  let sql: Awaited<ReturnType<typeof openDatabase>> | null = null;
  try {
    // The deployed (secret) path connects inside openDatabase (it waits for a resuming
    // database), so a refused certificate can surface there as well as at the first query.
    const db = await openDatabase(
      { databaseUrl: c.url, databaseSecretArn: c.secret ? 'arn:probe' : undefined, databaseSsl: c.ssl },
      secrets,
      'dsi-tls-probe',
    );
    sql = db;
    await withDbErrors(db, () => db`select 1 as one`);
    outcomes.push({ name: c.name, ok: true });
  } catch (error) {
    outcomes.push({
      name: c.name,
      ok: false,
      error: (error as Error).name,
      message: (error as Error).message,
    });
  } finally {
    await sql?.end({ timeout: 1 });
  }
}
console.log(JSON.stringify(outcomes));

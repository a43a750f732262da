import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '#shared/aws/database.ts';
import { SecretCache } from '#shared/aws/secrets.ts';
import { ConfigError } from '#shared/errors.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

/*
 * The deployed functions' trust: verify-full against the CAs in DATABASE_CA_FILE alone (the RDS
 * bundle the stack ships), not the process's store. A proxy on 127.0.0.1 answers PostgreSQL's
 * SSLRequest, terminates TLS with a certificate of a CA made here, and pipes to the test server.
 */

const run = promisify(execFile);
const SSL_REQUEST_CODE = 80_877_103;
const sm = mockClient(SecretsManagerClient);
let dir: string;
let db: TestDatabase;
let proxy: net.Server;
let port: number;

async function openssl(args: string[]) {
  await run('openssl', args, { cwd: dir });
}
const key = (file: string) => [
  '-newkey',
  'ec',
  '-pkeyopt',
  'ec_paramgen_curve:prime256v1',
  '-nodes',
  '-keyout',
  file,
];
const caArgs = (name: string) => [
  'req',
  '-x509',
  ...key(`${name}.key`),
  '-out',
  `${name}.pem`,
  '-days',
  '2',
  '-subj',
  `/CN=${name}`,
  '-addext',
  'basicConstraints=critical,CA:TRUE',
  '-addext',
  'keyUsage=critical,keyCertSign,cRLSign',
];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dsi-ca-file-'));
  db = await createTestDatabase('dsi_ca_file');
  await openssl(caArgs('rds-ca'));
  await openssl(caArgs('other-ca'));
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  await openssl(['req', ...key('server.key'), '-out', 'server.csr', '-subj', '/CN=localhost']);
  await openssl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'rds-ca.pem',
    '-CAkey',
    'rds-ca.key',
    '-CAcreateserial',
    '-out',
    'server.pem',
    '-days',
    '2',
    '-extfile',
    'server.ext',
  ]);
  const credentials = {
    key: await readFile(join(dir, 'server.key')),
    cert: await readFile(join(dir, 'server.pem')),
  };
  const target = new URL(db.url);
  proxy = net.createServer((client) => {
    client.on('error', () => client.destroy());
    client.once('data', (first) => {
      if (first.length !== 8 || first.readInt32BE(4) !== SSL_REQUEST_CODE) return client.destroy();
      client.write('S');
      const secure = new tls.TLSSocket(client, { isServer: true, ...credentials });
      secure.on('error', () => secure.destroy());
      secure.once('secure', () => {
        const pg = net.connect(Number(target.port || 5432), target.hostname);
        pg.on('error', () => secure.destroy());
        pg.on('close', () => secure.destroy());
        secure.on('close', () => pg.destroy());
        secure.pipe(pg).pipe(secure);
      });
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  port = (proxy.address() as net.AddressInfo).port;
  const u = new URL(db.url);
  sm.on(GetSecretValueCommand).resolves({
    SecretString: JSON.stringify({
      host: 'localhost',
      port,
      username: decodeURIComponent(u.username) || 'postgres',
      password: decodeURIComponent(u.password),
      dbname: u.pathname.slice(1),
    }),
  });
});

afterAll(async () => {
  sm.restore();
  await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
  await db?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const open = (caFile: string) =>
  openDatabase(
    { databaseSecretArn: 'arn:db', databaseSsl: 'verify-full', databaseCaFile: join(dir, caFile) },
    new SecretCache(new SecretsManagerClient({ region: 'us-east-1' })),
    'ca-file-test',
    { resumeWaitMs: 0 },
  );

describe('DATABASE_CA_FILE', () => {
  it('connects with verify-full when the certificate chains to a CA in the file', async () => {
    const sql = await open('rds-ca.pem');
    try {
      const [row] = await sql<{ ssl: boolean }[]>`select ssl from pg_stat_ssl where pid = pg_backend_pid()`;
      // The proxy terminates TLS, so the server itself sees plain text: the query ran over the verified link.
      expect(row).toEqual({ ssl: false });
    } finally {
      await sql.end();
    }
  });

  it('refuses a server whose CA is not in the file, even one this process might trust otherwise', async () => {
    const err = await open('other-ca.pem').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/certificate/i);
    // The refusal names the file checked against and the deploy-time fix.
    expect((err as Error).message).toContain(`no CA in DATABASE_CA_FILE=${join(dir, 'other-ca.pem')}`);
    expect((err as Error).message).toContain('-c databaseCaBundle=');
  });
});

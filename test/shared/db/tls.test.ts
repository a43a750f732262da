import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';

/*
 * TLS to PostgreSQL with a CA made for the test. A small proxy on 127.0.0.1 answers the
 * client's SSLRequest with 'S', terminates TLS with a test certificate and pipes the plain
 * protocol to the test server. The client runs in a child process whose NODE_EXTRA_CA_CERTS
 * is the test CA: the mechanism the deployed function uses for Amazon's RDS CAs.
 */

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../../..');
const PROBE = join(import.meta.dirname, 'support', 'tls-probe.ts');
const SSL_REQUEST_CODE = 80_877_103;

interface Proxy {
  port: number;
  /** The SNI servername each TLS client sent (false: none, as for an IP address). */
  servernames: (string | false | null)[];
  close(): Promise<void>;
}

let dir: string;
let testDb: TestDatabase;
let upstream: { host: string; port: number; user: string; password: string; database: string };
const proxies: Record<'trusted' | 'wrongHost' | 'nameOnly' | 'otherCa', Proxy> = {} as never;

function openssl(args: string[]): Promise<unknown> {
  return run('openssl', args, { cwd: dir });
}

/** openssl req arguments for a new P-256 key, unencrypted, written to `keyFile`. */
const newKey = (keyFile: string) => [
  '-newkey',
  'ec',
  '-pkeyopt',
  'ec_paramgen_curve:prime256v1',
  '-nodes',
  '-keyout',
  keyFile,
];

/** A key and a certificate for `subject` with `san`, signed by the test CA or (no CA) by itself. */
async function certificate(name: string, subject: string, san: string, signedByCa: boolean) {
  await writeFile(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
  const key = newKey(`${name}.key`);
  if (signedByCa) {
    await openssl(['req', ...key, '-out', `${name}.csr`, '-subj', subject]);
    await openssl(
      ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial'].concat([
        '-out',
        `${name}.pem`,
        '-days',
        '2',
        '-extfile',
        `${name}.ext`,
      ]),
    );
  } else {
    await openssl(['req', '-x509', ...key, '-out', `${name}.pem`, '-days', '2', '-subj', subject]);
  }
  return {
    key: await readFile(join(dir, `${name}.key`)),
    cert: await readFile(join(dir, `${name}.pem`)),
  };
}

function startProxy(credentials: { key: Buffer; cert: Buffer }): Promise<Proxy> {
  const servernames: (string | false | null)[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    client.once('data', (first) => {
      if (first.length !== 8 || first.readInt32BE(4) !== SSL_REQUEST_CODE) {
        client.destroy(); // this proxy only speaks TLS
        return;
      }
      client.write('S');
      const secure = new tls.TLSSocket(client, { isServer: true, ...credentials });
      secure.on('error', () => secure.destroy());
      secure.once('secure', () => {
        servernames.push(secure.servername);
        const pg = net.connect(upstream.port, upstream.host);
        sockets.add(pg);
        pg.on('error', () => secure.destroy());
        pg.on('close', () => secure.destroy());
        secure.on('close', () => pg.destroy());
        secure.pipe(pg).pipe(secure);
      });
    });
  });
  return new Promise((resolveProxy) => {
    server.listen(0, '127.0.0.1', () => {
      resolveProxy({
        port: (server.address() as net.AddressInfo).port,
        servernames,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

async function probe(
  cases: { name: string; url?: string; secret?: Record<string, unknown>; ssl?: string }[],
): Promise<Record<string, { ok: boolean; error?: string; message?: string }>> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', PROBE, JSON.stringify(cases)], {
    cwd: REPO,
    env: { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') },
  });
  const outcomes = JSON.parse(stdout.trim().split('\n').at(-1) ?? '[]') as ({ name: string } & {
    ok: boolean;
  })[];
  return Object.fromEntries(outcomes.map(({ name, ...rest }) => [name, rest]));
}

function secret(proxy: Proxy, host = '127.0.0.1') {
  return {
    host,
    port: proxy.port,
    username: upstream.user,
    password: upstream.password,
    dbname: upstream.database,
  };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dsi-tls-'));
  testDb = await createTestDatabase('dsi_tls');
  const u = new URL(testDb.url);
  upstream = {
    host: u.hostname,
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
  };
  await openssl([
    'req',
    '-x509',
    ...newKey('ca.key'),
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=datasync-ingest test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  proxies.trusted = await startProxy(
    await certificate('trusted', '/CN=localhost', 'IP:127.0.0.1,DNS:localhost', true),
  );
  proxies.wrongHost = await startProxy(
    await certificate('wrong-host', '/CN=db.example', 'DNS:db.example', true),
  );
  proxies.nameOnly = await startProxy(await certificate('name-only', '/CN=localhost', 'DNS:localhost', true));
  proxies.otherCa = await startProxy(
    await certificate('evil', '/CN=evil.example', 'IP:127.0.0.1,DNS:localhost', false),
  );
});

afterAll(async () => {
  await Promise.all(Object.values(proxies).map((p) => p.close()));
  await testDb?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('TLS to PostgreSQL (#12 defect 3)', () => {
  it('verifies the certificate and the host name on the deployed path, and says why and what to do when it refuses', async () => {
    const outcomes = await probe([
      { name: 'trusted', secret: secret(proxies.trusted) },
      { name: 'trusted by name', secret: secret(proxies.trusted, 'localhost') },
      { name: 'other CA', secret: secret(proxies.otherCa) },
      { name: 'wrong host', secret: secret(proxies.wrongHost) },
      // Node checks a host it is not told against "localhost": an IP must be checked as itself.
      { name: 'IP not in the certificate', secret: secret(proxies.nameOnly) },
      { name: 'other CA, require', secret: secret(proxies.otherCa), ssl: 'require' },
    ]);

    expect(outcomes.trusted).toEqual({ ok: true });
    expect(outcomes['trusted by name']).toEqual({ ok: true });
    // SNI: the host name is sent, an IP address is not (RFC 6066).
    expect(proxies.trusted.servernames).toEqual([false, 'localhost']);

    expect(outcomes['other CA']).toMatchObject({ ok: false, error: 'ConfigError' });
    expect(outcomes['other CA']?.message).toMatch(
      /PostgreSQL at 127\.0\.0\.1:\d+\/dsi_tls_\w+ presented a TLS certificate this process does not trust \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)/,
    );
    expect(outcomes['other CA']?.message).toContain('NODE_EXTRA_CA_CERTS=/var/runtime/ca-cert.pem');

    expect(outcomes['wrong host']).toMatchObject({ ok: false, error: 'ConfigError' });
    expect(outcomes['wrong host']?.message).toMatch(
      /presented a TLS certificate for another host name \(ERR_TLS_CERT_ALTNAME_INVALID: .*127\.0\.0\.1/,
    );
    expect(outcomes['wrong host']?.message).toMatch(/connect by the server's own endpoint/);
    expect(outcomes['IP not in the certificate']).toMatchObject({ ok: false, error: 'ConfigError' });
    expect(outcomes['IP not in the certificate']?.message).toMatch(
      /ERR_TLS_CERT_ALTNAME_INVALID: .*127\.0\.0\.1/,
    );

    // DATABASE_SSL=require is the explicit opt-out: encrypted, unauthenticated.
    expect(outcomes['other CA, require']).toEqual({ ok: true });
  });

  it("keeps a DATABASE_URL's sslmode working, and lets DATABASE_SSL override it", async () => {
    const url = (proxy: Proxy, mode: string) =>
      `postgres://${encodeURIComponent(upstream.user)}:${encodeURIComponent(upstream.password)}@127.0.0.1:${proxy.port}/${upstream.database}?sslmode=${mode}`;
    const outcomes = await probe([
      { name: 'verify-full, trusted', url: url(proxies.trusted, 'verify-full') },
      { name: 'verify-full, other CA', url: url(proxies.otherCa, 'verify-full') },
      { name: 'verify-full, IP not in the certificate', url: url(proxies.nameOnly, 'verify-full') },
      { name: 'require, other CA', url: url(proxies.otherCa, 'require') },
      { name: 'require overridden', url: url(proxies.otherCa, 'require'), ssl: 'verify-full' },
    ]);
    expect(outcomes['verify-full, trusted']).toEqual({ ok: true });
    expect(outcomes['verify-full, other CA']).toMatchObject({ ok: false, error: 'ConfigError' });
    expect(outcomes['verify-full, IP not in the certificate']).toMatchObject({
      ok: false,
      error: 'ConfigError',
    });
    expect(outcomes['require, other CA']).toEqual({ ok: true });
    expect(outcomes['require overridden']).toMatchObject({ ok: false, error: 'ConfigError' });
  });
});

import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A local certificate authority standing in for the RDS one, and a server certificate it signs
 * for the throwaway PostgreSQL's host name. Made with the openssl command line (Node's crypto
 * signs data but cannot issue X.509 certificates). Valid two days: made anew for every run.
 */

export class TlsError extends Error {
  override readonly name = 'TlsError';
}

export interface LocalCa {
  /** PEM file of the CA certificate: what DATABASE_CA_FILE (or the runtime's CA bundle) names. */
  caFile: string;
  /** The server's certificate and key (PEM), issued for `hostName`. */
  certFile: string;
  keyFile: string;
  hostName: string;
  /** The certificate's subject and SAN as openssl prints them. */
  describe: string;
}

function openssl(args: string[], cwd: string): string {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8', timeout: 60_000 });
  if (r.error || r.status !== 0) {
    const said = r.error ? r.error.message : `${r.stderr}${r.stdout}`.trim();
    throw new TlsError(
      `openssl ${args[0]} failed: ${said}. The twin makes its local CA with the openssl command line: ` +
        'install it (Debian/Ubuntu: apt-get install openssl; macOS ships LibreSSL, brew install openssl@3 for 3.x).',
    );
  }
  return r.stdout;
}

/** A new CA in `dir` and a certificate for `hostName` (a DNS name in the SAN, as RDS's endpoints are). */
export function makeLocalCa(dir: string, hostName: string, label = 'datasync-ingest twin'): LocalCa {
  mkdirSync(dir, { recursive: true });
  const curve = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(
    [
      'req',
      '-x509',
      ...curve,
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      `/CN=${label} local CA (stands in for the RDS CA)`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  openssl(['req', ...curve, '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${hostName}`], dir);
  writeFileSync(
    join(dir, 'server.ext'),
    [
      `subjectAltName=DNS:${hostName}`,
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      '',
    ].join('\n'),
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.crt',
      '-days',
      '2',
      '-extfile',
      'server.ext',
    ],
    dir,
  );
  const printed = openssl(
    ['x509', '-in', 'server.crt', '-noout', '-subject', '-issuer', '-ext', 'subjectAltName'],
    dir,
  );
  const line = (key: string) => new RegExp(`^${key}=\\s*(.*)$`, 'm').exec(printed)?.[1]?.trim() ?? '?';
  const san = /Subject Alternative Name:\s*\n\s*(.*)/.exec(printed)?.[1]?.trim() ?? '?';
  const describe = `certificate ${line('subject')}, SAN ${san}, issued by ${line('issuer')}`;
  return {
    caFile: join(dir, 'ca.pem'),
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    hostName,
    describe,
  };
}

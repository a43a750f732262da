import net from 'node:net';
import tls from 'node:tls';

const SSL_REQUEST_CODE = 80_877_103;

/**
 * A PostgreSQL TLS front on 127.0.0.1: answers the SSLRequest with 'S', terminates TLS with the
 * given certificate and pipes the plain protocol to `target` (a postgres:// URL). The test server
 * has no TLS of its own; this stands in for a server whose certificate some CA signed.
 */
export async function startTlsProxy(options: {
  cert: Buffer | string;
  key: Buffer | string;
  target: string;
}): Promise<{ port: number; close: () => Promise<void> }> {
  const target = new URL(options.target);
  const server = net.createServer((client) => {
    client.on('error', () => client.destroy());
    client.once('data', (first) => {
      if (first.length !== 8 || first.readInt32BE(4) !== SSL_REQUEST_CODE) return client.destroy();
      client.write('S');
      const secure = new tls.TLSSocket(client, { isServer: true, cert: options.cert, key: options.key });
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
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

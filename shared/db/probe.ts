import net from 'node:net';

/*
 * Is a PostgreSQL server listening at host:port? postgres.js cannot say: against a port that
 * accepts TCP and then closes (an HTTP server answering its startup message with a 400), it
 * reconnects forever with the first query pending, and against a silent one it waits for its
 * connect timeout and names nothing but CONNECT_TIMEOUT. One SSLRequest tells them apart: every
 * PostgreSQL since 7.2 answers it with one byte, `S` or `N`, before any authentication.
 */

/** The SSLRequest message: int32 length 8, int32 code 80877103 (1234 in the high 16 bits, 5679 low). */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

export type ProbeFailure =
  | { kind: 'refused' | 'unreachable'; code: string; message: string }
  | { kind: 'silent'; timeoutMs: number }
  | { kind: 'closed' }
  | { kind: 'not-postgres'; firstBytes: string };

/**
 * null when a PostgreSQL server answers at host:port within `timeoutMs` (TCP connect included),
 * else what happened instead.
 */
export function probePostgres(host: string, port: number, timeoutMs: number): Promise<ProbeFailure | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let settled = false;
    const done = (result: ProbeFailure | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ kind: 'silent', timeoutMs }), timeoutMs);
    socket.once('connect', () => socket.write(SSL_REQUEST));
    socket.once('data', (data: Buffer) => {
      const first = data[0];
      // S or N; E is a server that refuses the request outright (still PostgreSQL).
      if (first === 0x53 || first === 0x4e || first === 0x45) done(null);
      else done({ kind: 'not-postgres', firstBytes: printable(data.subarray(0, 40)) });
    });
    socket.once('end', () => done({ kind: 'closed' }));
    socket.once('close', () => done({ kind: 'closed' }));
    socket.once('error', (error: NodeJS.ErrnoException) => {
      const code = error.code ?? 'ERROR';
      done({ kind: code === 'ECONNREFUSED' ? 'refused' : 'unreachable', code, message: error.message });
    });
  });
}

/** The first bytes of an answer, as text a terminal can show (control characters escaped). */
function printable(bytes: Buffer): string {
  // JSON.stringify escapes the control characters; bytes past ASCII become `?`.
  return JSON.stringify(bytes.toString('latin1'))
    .slice(1, -1)
    .replace(/[\u007f-\u00ff]/g, '?');
}

/** The clause for a failed probe of a server: what answered instead of PostgreSQL. */
export function describeProbeFailure(failure: ProbeFailure): string {
  switch (failure.kind) {
    case 'refused':
      return `nothing listens there (${failure.code})`;
    case 'unreachable':
      return `the host cannot be reached (${failure.code}: ${failure.message})`;
    case 'silent':
      return (
        `the port accepted the connection but did not answer as PostgreSQL within ${failure.timeoutMs / 1000} s ` +
        '(expected a one-byte answer to an SSL request): something other than PostgreSQL listens there, or a firewall swallows the traffic'
      );
    case 'closed':
      return 'the port closed the connection instead of answering as PostgreSQL: something other than PostgreSQL listens there';
    case 'not-postgres':
      return `the port answered, but not as PostgreSQL (its first bytes: "${failure.firstBytes}"): it belongs to another server`;
  }
}

import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lastJson, lines, runCli, startCli } from './support.ts';

// A --database-url whose port accepts TCP but does not speak PostgreSQL used to hang the run for
// good (postgres.js reconnects without end against a server that closes the connection).
let dataDir: string;
let silent: net.Server;
let httpServer: http.Server;
const accepted: net.Socket[] = [];
let connections = 0;

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );
}

let silentPort: number;
let httpPort: number;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'dsi-local-connect-'));
  // Accepts and never says a word.
  silent = net.createServer((socket) => {
    connections++;
    accepted.push(socket);
  });
  silentPort = await listen(silent);
  httpServer = http.createServer((_req, res) => res.end('hello'));
  httpPort = await listen(httpServer);
});

afterAll(async () => {
  for (const s of accepted) s.destroy();
  await new Promise((r) => silent?.close(r));
  httpServer?.closeAllConnections();
  await new Promise((r) => httpServer?.close(r));
  rmSync(dataDir, { recursive: true, force: true });
});

const args = (port: number) => [
  '--database-url',
  `postgres://app:hunter2@127.0.0.1:${port}/datasync`,
  '--data-dir',
  dataDir,
  '--events',
  '1000',
  '--json',
];

describe('connecting to a port that is not PostgreSQL', { timeout: 120_000 }, () => {
  it('gives up on a silent port after the connect timeout, naming the host and what was expected', async () => {
    const r = await runCli(args(silentPort));
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toEqual([
      `error: Cannot connect to PostgreSQL at 127.0.0.1:${silentPort}: the port accepted the connection but did not answer ` +
        'as PostgreSQL within 10 s (expected a one-byte answer to an SSL request): something other than PostgreSQL ' +
        'listens there, or a firewall swallows the traffic. Check --database-url / DATABASE_URL (host and port of a ' +
        'PostgreSQL server) and that the server is running, or leave both unset to use the embedded PostgreSQL.',
    ]);
    expect(r.stderr).not.toContain('hunter2');
    expect(lastJson(r.stdout)).toMatchObject({ status: 'failed' });
  });

  it("says an HTTP server's port belongs to another server, quoting what it answered", async () => {
    const r = await runCli(args(httpPort));
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain(
      `error: Cannot connect to PostgreSQL at 127.0.0.1:${httpPort}: the port answered, but not as PostgreSQL (its first bytes: "HTTP/1.1 400 Bad Request`,
    );
  });

  it('stops on Ctrl-C while connecting, with no resume command: nothing was started', async () => {
    const before = connections;
    const cli = startCli(args(silentPort));
    while (connections === before) {
      if (cli.child.exitCode !== null) throw new Error(`the run exited early:\n${cli.stderr()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    cli.child.kill('SIGINT');
    const r = await cli.done;
    expect(r.code).toBe(130);
    expect(r.stderr).toContain(
      `error: interrupted while connecting to PostgreSQL at 127.0.0.1:${silentPort}: nothing was written by this run, so there is nothing to resume`,
    );
    expect(r.stderr).not.toContain('npm run local');
    expect(r.stdout).not.toContain('npm run local');
    expect(lastJson(r.stdout)).toMatchObject({ status: 'interrupted', error: { name: 'Interrupted' } });
  });
});

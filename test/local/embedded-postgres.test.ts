import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EmbeddedPostgresError,
  loadBinaries,
  osUser,
  reachableBinaries,
  startEmbeddedPostgres,
  stopEmbeddedPostgres,
} from '#local/embedded-postgres.ts';

const isRoot = process.getuid?.() === 0;
let work: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'dsi-embedded-'));
  // mkdtemp makes the folder 0700; the server's user must be able to enter it when we are root.
  chmodSync(work, 0o755);
});

afterAll(async () => {
  for (const name of ['pg', 'orphan']) await stopEmbeddedPostgres(join(work, name)).catch(() => false);
  rmSync(work, { recursive: true, force: true });
});

async function select1(url: string): Promise<string> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<
      { v: string; enc: string }[]
    >`select version() as v, current_setting('server_encoding') as enc`;
    return `${row?.enc} ${row?.v}`;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

describe('the embedded PostgreSQL', () => {
  it('initialises, serves PostgreSQL 16 in UTF-8, re-attaches to a running server, and stops', async () => {
    const dataDir = join(work, 'pg');
    const first = await startEmbeddedPostgres({ dataDir });
    expect(first.started).toBe(true);
    expect(await select1(first.url)).toMatch(/^UTF8 PostgreSQL 16\./);

    const again = await startEmbeddedPostgres({ dataDir });
    expect(again.started).toBe(false);
    expect(again.port).toBe(first.port);

    await first.stop();
    expect(existsSync(join(dataDir, 'postmaster.pid'))).toBe(false);
    await expect(select1(first.url)).rejects.toThrow();
  });

  it('stops a server left running by a process that died (stopEmbeddedPostgres)', async () => {
    const dataDir = join(work, 'orphan');
    const h = await startEmbeddedPostgres({ dataDir });
    // Nobody calls h.stop(): as after a SIGKILL of the runner.
    expect(await stopEmbeddedPostgres(dataDir)).toBe(true);
    await expect(select1(h.url)).rejects.toThrow();
    expect(await stopEmbeddedPostgres(dataDir)).toBe(false);
  });

  it('refuses a data directory written by another major version, naming the fix', async () => {
    const dataDir = join(work, 'old');
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(join(dataDir, 'PG_VERSION'), '18\n');
    const error = await startEmbeddedPostgres({ dataDir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EmbeddedPostgresError);
    expect((error as Error).message).toMatch(/written by PostgreSQL 18.*PostgreSQL 16.*delete that folder/);
  });

  it('says which folder is not writable when the data dir cannot be created', async () => {
    const file = join(work, 'a-file');
    writeFileSync(file, '');
    const error = await startEmbeddedPostgres({ dataDir: join(file, 'pg') }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EmbeddedPostgresError);
    expect((error as Error).message).toContain('Cannot create the embedded PostgreSQL');
    expect((error as Error).message).toContain('--data-dir');
  });
});

// As root, PostgreSQL runs as the OS user `postgres`. These cases exist only for root (CI runs as
// root); as another user the server runs as that user and nothing here applies.
describe.runIf(isRoot)('the embedded PostgreSQL as root', () => {
  it('copies the binaries where the postgres user can run them when the checkout is closed to it', async () => {
    const runAs = osUser();
    expect(runAs).not.toBeNull();
    const bin = await loadBinaries();
    // A checkout in a folder only root can enter, as `mktemp -d` makes one.
    const closed = mkdtempSync(join(work, 'closed-'));
    chmodSync(closed, 0o700);
    const native = join(closed, 'native');
    cpSync(dirname(dirname(bin.postgres)), native, { recursive: true, verbatimSymlinks: true });
    const inClosed = {
      initdb: join(native, 'bin', 'initdb'),
      pg_ctl: join(native, 'bin', 'pg_ctl'),
      postgres: join(native, 'bin', 'postgres'),
      version: bin.version,
    };
    const asPostgres = { uid: runAs?.uid, gid: runAs?.gid, encoding: 'utf8' as const };
    expect(spawnSync(inClosed.postgres, ['--version'], asPostgres).status).not.toBe(0);

    const copyBase = join(work, 'copies');
    mkdirSync(copyBase, { mode: 0o755 });
    const lines: string[] = [];
    const placed = reachableBinaries(inClosed, runAs, (l) => lines.push(l), copyBase);
    expect(placed.postgres.startsWith(copyBase)).toBe(true);
    expect(lines.join('\n')).toContain('copying the PostgreSQL binaries');
    const version = spawnSync(placed.postgres, ['--version'], asPostgres);
    expect(version.status).toBe(0);
    expect(version.stdout).toMatch(/PostgreSQL\) 16\./);
  });

  it('names the folder the postgres user cannot enter, and the fixes, for a data dir behind it', async () => {
    const closed = mkdtempSync(join(work, 'private-'));
    chmodSync(closed, 0o700);
    const error = await startEmbeddedPostgres({ dataDir: join(closed, 'data', 'postgres') }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(EmbeddedPostgresError);
    const message = (error as Error).message;
    expect(message).toContain(`cannot enter ${closed}`);
    expect(message).toContain(`chmod o+x ${closed}`);
    expect(message).toContain('--data-dir');
  });
});

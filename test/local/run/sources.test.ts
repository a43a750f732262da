import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSimulator } from '#local/simulator/index.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { lastJson, lines, readSource, runCli, startCli, waitForSource } from './support.ts';

// Sources in one database never cost each other data: the same ids live in two sources, and a
// run for another data set than the stored one is refused until --reset or --source says so.
let db: TestDatabase;
let dataDir: string;

beforeAll(async () => {
  db = await createTestDatabase('dsi_local_sources');
  dataDir = mkdtempSync(join(tmpdir(), 'dsi-local-sources-'));
});

afterAll(async () => {
  await db?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** A fast simulator run of `events` events (no latency, no rate limit) into the test database. */
function run(args: string[]) {
  return runCli([
    '--database-url',
    db.url,
    '--data-dir',
    dataDir,
    '--latency-ms',
    '0',
    '--rate-limit',
    '0',
    '--progress',
    'none',
    '--json',
    ...args,
  ]);
}

const CLI_TIMEOUT = { timeout: 180_000 };

describe('sources side by side', CLI_TIMEOUT, () => {
  it('keeps both when two sources read the same data set (same ids)', async () => {
    const a = await run(['--events', '3000', '--source', 'same-a']);
    const b = await run(['--events', '3000', '--source', 'same-b']);
    for (const r of [a, b]) {
      expect(r.code, r.stderr).toBe(0);
      expect(lastJson(r.stdout)).toMatchObject({ status: 'complete', events: 3000, verified: true });
    }
    expect((await readSource(db.url, 'same-a')).events).toBe(3000);
    expect((await readSource(db.url, 'same-b')).events).toBe(3000);
  });

  it('refuses another data set for a stored source, changes nothing, and says what to type', async () => {
    const first = await run(['--events', '2000', '--source', 'kept']);
    expect(first.code, first.stderr).toBe(0);
    const r = await run(['--events', '16', '--source', 'kept']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain(
      'error: source "kept" holds 2,000 events of the simulator\'s 2,000-event data set',
    );
    expect(r.stderr).toContain("this run asks for the simulator's 16-event data set (--events 16)");
    expect(r.stderr).toContain('Nothing was changed');
    expect(r.stderr).toContain('--reset');
    expect(r.stderr).toContain('add --source sim-16-rl0-latency0 (any new name)');
    expect(lastJson(r.stdout)).toMatchObject({ status: 'failed', error: { name: 'SourceMismatchError' } });
    const after = await readSource(db.url, 'kept');
    expect(after.events).toBe(2000);
    expect(after.checkpoint?.status).toBe('complete');
  });

  it('refuses a stored source read with another seed or --chaos too', async () => {
    const r = await run(['--events', '2000', '--source', 'kept', '--chaos']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('(--events 2000 --chaos)');
    expect((await readSource(db.url, 'kept')).events).toBe(2000);
  });

  it('starts the source over with the new data set only with --reset', async () => {
    const r = await run(['--events', '16', '--source', 'kept', '--reset']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('reset: source "kept" emptied (2,000 events and 0 rejected rows deleted)');
    expect(lastJson(r.stdout)).toMatchObject({ status: 'complete', events: 16, verified: true });
  });

  it('gives a quick variant a source of its own: the default source is never touched', async () => {
    const r = await run(['--events', '1000']);
    expect(r.code, r.stderr).toBe(0);
    expect(lastJson(r.stdout)).toMatchObject({ sourceId: 'sim-1000-rl0-latency0', verified: true });
    expect((await readSource(db.url, 'default')).checkpoint).toBeNull();
  });

  it('says a complete source whose rows were deleted by hand does not verify, and how to ingest it anew', async () => {
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await sql`delete from events where ctid in (select ctid from events where source_id = 'same-a' limit 10)`;
    } finally {
      await sql.end();
    }
    const r = await run(['--events', '3000', '--source', 'same-a']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      'source "same-a" was completed earlier, but its stored rows no longer match its checkpoint',
    );
    expect(r.stderr).toContain('add --reset to ingest it anew');
    expect(r.stderr).not.toContain('another source');
  });
});

describe('an interrupted run against an API with a key and a database with a password', CLI_TIMEOUT, () => {
  it('prints a resume command that names the key and the password without their values', async () => {
    const key = 'sk-live-do-not-print';
    const simulator = await startSimulator({
      port: 0,
      events: 60_000,
      apiKey: key,
      latencyMs: 0,
      rateLimit: 1,
      windowSeconds: 2,
    });
    const url = new URL(db.url);
    if (!url.password) url.password = 'db-secret-do-not-print';
    const password = url.password;
    try {
      const cli = startCli([
        '--api-url',
        simulator.url,
        '--api-key',
        key,
        '--database-url',
        url.toString(),
        '--data-dir',
        dataDir,
        '--source',
        'secrets',
        '--progress',
        'lines',
      ]);
      await waitForSource(db.url, 'secrets', (st) => (st.checkpoint?.pages ?? 0) >= 1, cli);
      cli.child.kill('SIGINT');
      const r = await cli.done;
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(130);
      const printed = `${r.stdout}\n${r.stderr}`;
      expect(printed).not.toContain(key);
      expect(printed).not.toContain(password);
      expect(r.stdout).toContain(`--api-key "$DATASYNC_API_KEY"`);
      expect(r.stdout).toContain(`:<password>@${url.host}`);
      expect(r.stdout).toMatch(
        /run `npm run local -- --api-url .* --source secrets --progress lines` to resume from there/,
      );
    } finally {
      await simulator.close();
    }
  });
});

describe('a run against an API (not the bundled simulator)', CLI_TIMEOUT, () => {
  it("counts every request the API answered in the summary's requests, the preflight probe's included", async () => {
    const key = 'sk-count-requests';
    const simulator = await startSimulator({
      port: 0,
      events: 12_000,
      apiKey: key,
      latencyMs: 0,
      rateLimit: 0,
    });
    try {
      const r = await runCli([
        '--api-url',
        simulator.url,
        '--api-key',
        key,
        '--database-url',
        db.url,
        '--data-dir',
        dataDir,
        '--source',
        'counted',
        '--progress',
        'none',
        '--json',
      ]);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      const s = lastJson(r.stdout);
      expect(s).toMatchObject({ status: 'complete', verified: true, events: 12_000 });
      expect(s.requests).toBe(simulator.stats().requests);
    } finally {
      await simulator.close();
    }
  });
});

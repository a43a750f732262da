import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningSimulator, startSimulator } from '#local/simulator/index.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { lastJson, lines, readSource, runCli } from './support.ts';

// Every mistake a user can make on the command line ends in one line on stderr, a non-zero exit,
// and nothing stored for the source.
let db: TestDatabase;
let dataDir: string;
let simulator: RunningSimulator;

beforeAll(async () => {
  db = await createTestDatabase('dsi_local_bad');
  dataDir = mkdtempSync(join(tmpdir(), 'dsi-local-bad-'));
  simulator = await startSimulator({
    port: 0,
    latencyMs: 0,
    events: 1000,
    apiKey: 'the-right-key',
    rateLimit: 0,
  });
});

afterAll(async () => {
  await simulator?.close();
  await db?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function expectNothingStored(): Promise<void> {
  const state = await readSource(db.url, 'default');
  expect(state.events).toBe(0);
  expect(state.rejectedRows).toBe(0);
  expect(state.checkpoint).toBeNull();
}

// Each case starts the CLI as a child process (tsx, the synthesized state machine): room for a busy machine.
const CLI_TIMEOUT = { timeout: 120_000 };

describe('npm run local with bad input', CLI_TIMEOUT, () => {
  it('rejects an unknown option with the way to the help', async () => {
    const r = await runCli(['--evnets', '10', '--database-url', db.url, '--data-dir', dataDir]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual([
      "error: Unknown option '--evnets'. Run `npm run local -- --help` for the options.",
    ]);
    await expectNothingStored();
  });

  it('names an unreachable database and how to point at another', async () => {
    const r = await runCli([
      '--database-url',
      'postgres://postgres@127.0.0.1:1/x',
      '--data-dir',
      dataDir,
      '--json',
    ]);
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(
      /^error: Cannot connect to PostgreSQL at 127\.0\.0\.1:1: .*Check --database-url/,
    );
    // Scripts read the last line: a failure is JSON too, with the same message.
    const json = lastJson(r.stdout);
    expect(json.status).toBe('failed');
    expect(json.error?.message).toMatch(/^Cannot connect to PostgreSQL at 127\.0\.0\.1:1: /);
    // And the run's log has it, where the user is told to look.
    const log = readFileSync(join(dataDir, 'logs', 'default.log'), 'utf8');
    expect(log).toContain('Cannot connect to PostgreSQL at 127.0.0.1:1');
  });

  it('stops on a wrong API key before writing a checkpoint', async () => {
    const r = await runCli([
      '--api-url',
      simulator.url,
      '--api-key',
      'a-wrong-key',
      '--database-url',
      db.url,
      '--data-dir',
      dataDir,
      '--json',
    ]);
    expect(r.code).toBe(1);
    // A key on the command line is shown by npm's banner: the run says so, without repeating it.
    expect(lines(r.stderr)).toHaveLength(2);
    expect(lines(r.stderr)[0]).toBe(
      "warning: a key given as --api-key is visible in the shell history, in the process list and in npm's banner " +
        '(unless npm run -s); set DATASYNC_API_KEY instead',
    );
    expect(lines(r.stderr)[1]).toMatch(
      /^error: The DataSync API at .* refused the API key \(HTTP 40[13]\)\. Check --api-key/,
    );
    expect(r.stderr).not.toContain('a-wrong-key');
    await expectNothingStored();
  });

  it('names an API that cannot be reached', async () => {
    const r = await runCli([
      '--api-url',
      'http://127.0.0.1:1/api/v1',
      '--api-key',
      'k',
      '--database-url',
      db.url,
      '--data-dir',
      dataDir,
    ]);
    expect(r.code).toBe(1);
    const errors = lines(r.stderr).filter((l) => !l.startsWith('warning: a key given as --api-key'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(
      /^error: Cannot reach the DataSync API at http:\/\/127\.0\.0\.1:1\/api\/v1 .*Check --api-url/,
    );
    await expectNothingStored();
  });

  it('refuses --time-scale against a real API, whose windows it cannot shorten', async () => {
    const r = await runCli([
      '--api-url',
      simulator.url,
      '--api-key',
      'the-right-key',
      '--time-scale',
      '10',
      '--database-url',
      db.url,
      '--data-dir',
      dataDir,
    ]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual([
      'error: --time-scale applies to the bundled simulator only; drop it with --api-url (the real API keeps real time)',
    ]);
    await expectNothingStored();
  });

  it('rejects a malformed --api-url', async () => {
    const r = await runCli([
      '--api-url',
      'htp:/nowhere',
      '--api-key',
      'k',
      '--database-url',
      db.url,
      '--data-dir',
      dataDir,
    ]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual([
      'error: --api-url must be an http(s) URL of the API base, e.g. https://host/api/v1; got "htp:/nowhere"',
    ]);
    await expectNothingStored();
  });

  it('answers --help with exit 0 and lists --data-dir', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}--data-dir DIR /m);
    expect(r.stdout).toContain('npm run local:db');
    expect(r.stderr).toBe('');
  });

  it('says what --events must be for a negative count, and ends --json with a failure line', async () => {
    const r = await runCli(['--events', '-5', '--database-url', db.url, '--data-dir', dataDir, '--json']);
    expect(r.code).toBe(2);
    const message = '--events must be a whole number from 1 to 50,000,000 (decimal digits), got "-5"';
    expect(lines(r.stderr)).toEqual([`error: ${message}`]);
    expect(lastJson(r.stdout)).toEqual({ status: 'failed', error: { name: 'UsageError', message } });
  });

  it('says a data dir that cannot be written is not writable', async () => {
    // /proc refuses new folders even to root, as a read-only mount does.
    const r = await runCli(['--database-url', db.url, '--data-dir', '/proc/dsi-local-test', '--json']);
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(
      /^error: The data dir \/proc\/dsi-local-test is not writable \(.*\)\. Pass --data-dir /,
    );
    expect(lastJson(r.stdout)).toMatchObject({ status: 'failed', error: { name: 'Error' } });
  });
});

// As root the embedded server runs as the OS user `postgres`; cases that exist only for root.
describe.runIf(process.getuid?.() === 0)('npm run local as root', CLI_TIMEOUT, () => {
  it('says in one line why a data dir inside a folder only root can enter cannot hold the database', async () => {
    const closed = mkdtempSync(join(tmpdir(), 'dsi-local-closed-'));
    try {
      chmodSync(closed, 0o700);
      mkdirSync(join(closed, 'inner'));
      const r = await runCli(['--data-dir', join(closed, 'inner'), '--events', '1000', '--json']);
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toContain(
        `error: The embedded PostgreSQL runs as the OS user "postgres" (PostgreSQL refuses to run as root), and that user cannot enter ${closed}`,
      );
      expect(r.stderr).toContain(`chmod o+x ${closed}`);
      expect(lastJson(r.stdout)).toMatchObject({
        status: 'failed',
        error: { name: 'EmbeddedPostgresError' },
      });
    } finally {
      rmSync(closed, { recursive: true, force: true });
    }
  });
});

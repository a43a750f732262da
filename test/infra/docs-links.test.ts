import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildStack } from './support.ts';

const ROOT = resolve(import.meta.dirname, '../..');

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? files(path) : entry.name.endsWith('.ts') ? [path] : [];
  });
}

const docsPaths = (text: string) => [...text.matchAll(/\bdocs\/[\w./-]+\.md\b/g)].map((m) => m[0]);

describe('docs named by the code and the template', () => {
  it('exist for every docs/ path in infra/, functions/, ops/ and shared/', () => {
    const named = ['infra', 'functions', 'ops', 'shared'].flatMap((dir) =>
      files(join(ROOT, dir)).flatMap((file) =>
        docsPaths(readFileSync(file, 'utf8')).map((path) => ({ file: relative(ROOT, file), path })),
      ),
    );
    expect(named.map((n) => n.path)).toContain('docs/deploy.md');
    expect(named.filter((n) => !existsSync(join(ROOT, n.path)))).toEqual([]);
  });

  it('exist for every docs/ path in the synthesized template (descriptions users read)', () => {
    const template = JSON.stringify(buildStack().template.toJSON());
    const named = docsPaths(template);
    expect(named.length).toBeGreaterThan(0);
    expect(named.filter((path) => !existsSync(join(ROOT, path)))).toEqual([]);
  });

  it('docs/deploy.md links only inside the repository', () => {
    const text = readFileSync(join(ROOT, 'docs/deploy.md'), 'utf8');
    const links = [...text.matchAll(/\]\(([^)]+)\)/g)].map((m) => m[1]!);
    for (const link of links) {
      expect(link).not.toMatch(/^[a-z]+:/i);
      if (!link.startsWith('#')) expect(existsSync(resolve(ROOT, 'docs', link.split('#')[0]!))).toBe(true);
    }
  });
});

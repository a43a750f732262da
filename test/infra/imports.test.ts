import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const INFRA = join(ROOT, 'infra');

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return tsFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** Static and dynamic imports of `file` that stay inside infra/ (relative or through `#infra/`). */
function infraImports(file: string): string[] {
  const source = readFileSync(file, 'utf8');
  const specifiers = [...source.matchAll(/(?:from|import\()\s*['"]([^'"]+)['"]/g)].map((m) => m[1]!);
  return specifiers.flatMap((s) => {
    if (s.startsWith('#infra/')) return [join(INFRA, s.slice('#infra/'.length))];
    if (s.startsWith('.')) {
      const target = resolve(dirname(file), s);
      return target.startsWith(INFRA) ? [target] : [];
    }
    return [];
  });
}

/** Every cycle found by a depth-first walk, as a readable path of repository-relative files. */
function cycles(files: string[]): string[] {
  const graph = new Map(files.map((f) => [f, infraImports(f)]));
  const found: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const walk = (file: string, path: string[]) => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'visiting') {
      found.push([...path.slice(path.indexOf(file)), file].map((f) => relative(ROOT, f)).join(' -> '));
      return;
    }
    state.set(file, 'visiting');
    for (const next of graph.get(file) ?? []) walk(next, [...path, file]);
    state.set(file, 'done');
  };
  for (const file of files) walk(file, []);
  return found;
}

describe('infra/ module graph', () => {
  it('has no import circle (a circle makes load order decide whether a class is defined yet)', () => {
    expect(cycles(tsFiles(INFRA))).toEqual([]);
  });

  it('the cycle finder does find a circle', () => {
    // Guards the test above against passing because the parser sees no imports at all.
    const imports = infraImports(join(INFRA, 'ingestion-stack.ts')).map((f) => relative(ROOT, f));
    expect(imports).toContain('infra/state-machine.ts');
  });
});

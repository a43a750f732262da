import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
/** Every folder that holds source: what the application, its tools and its tests import. */
const SOURCE_FOLDERS = ['infra', 'functions', 'shared', 'local', 'ops', 'bench', 'test', 'scripts'];
const SOURCE_FILE = /\.(ts|mjs|js)$/;

/** package.json's `imports` (`#shared/*` -> `./shared/*`): the aliases a specifier may use. */
const ALIASES = Object.entries(
  (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { imports: Record<string, string> })
    .imports,
).map(([from, to]) => ({ prefix: from.replace(/\*$/, ''), dir: join(ROOT, to.replace(/\*$/, '')) }));

function sourceFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : sourceFiles(path);
    return SOURCE_FILE.test(entry.name) && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

/**
 * The files `file` imports inside the repository: static, dynamic and type-only imports and
 * re-exports, relative or through a `#` alias. A type-only import counts: a circle of types
 * still ties the two modules' layers together.
 */
function localImports(file: string, source = readFileSync(file, 'utf8')): string[] {
  const specifiers = [...source.matchAll(/(?:\bfrom|\bimport\(|^import)\s*['"]([^'"]+)['"]/gm)].map(
    (m) => m[1]!,
  );
  return specifiers.flatMap((s) => {
    const alias = ALIASES.find((a) => s.startsWith(a.prefix));
    if (alias) return [join(alias.dir, s.slice(alias.prefix.length))];
    if (s.startsWith('.')) return [resolve(dirname(file), s)];
    return [];
  });
}

/** Every cycle found by a depth-first walk, as a readable path of repository-relative files. */
function cycles(graph: Map<string, string[]>): string[] {
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
  for (const file of graph.keys()) walk(file, []);
  return found;
}

function repositoryGraph(): Map<string, string[]> {
  const files = SOURCE_FOLDERS.flatMap((folder) => sourceFiles(join(ROOT, folder)));
  const rootFiles = readdirSync(ROOT)
    .filter((name) => SOURCE_FILE.test(name))
    .map((name) => join(ROOT, name));
  return new Map([...files, ...rootFiles].map((f) => [f, localImports(f)]));
}

describe('the module graph of every source folder', () => {
  it('has no import circle (a circle makes load order decide whether a class is defined yet)', () => {
    expect(cycles(repositoryGraph())).toEqual([]);
  });

  it('sees the imports of every folder it covers, through aliases and relative paths', () => {
    // Guards the test above against passing because the parser sees no imports at all.
    const graph = repositoryGraph();
    const importsOf = (file: string) => (graph.get(join(ROOT, file)) ?? []).map((f) => relative(ROOT, f));
    expect(importsOf('infra/ingestion-stack.ts')).toContain('infra/state-machine.ts');
    expect(importsOf('shared/step/index.ts')).toContain('shared/step/page.ts');
    expect(importsOf('functions/fetch-page/handler.ts')).toContain('shared/step/index.ts');
    for (const folder of SOURCE_FOLDERS.filter((f) => f !== 'scripts')) {
      const edges = [...graph].filter(([file]) => file.startsWith(join(ROOT, folder)));
      expect(
        edges.some(([, to]) => to.length > 0),
        `${folder}/ has files with imports`,
      ).toBe(true);
    }
  });

  it('nothing outside test/ imports test/ (bench/ owns what it imports)', () => {
    const testDir = join(ROOT, 'test');
    const intoTests = [...repositoryGraph()]
      .filter(([file]) => !file.startsWith(testDir))
      .flatMap(([file, to]) =>
        to.filter((t) => t.startsWith(testDir)).map((t) => `${relative(ROOT, file)} -> ${relative(ROOT, t)}`),
      );
    expect(intoTests).toEqual([]);
  });

  it('the cycle finder does find a circle, type-only imports included', () => {
    const a = join(ROOT, 'shared/a.ts');
    const b = join(ROOT, 'shared/b.ts');
    const graph = new Map([
      [a, localImports(a, "import type { B } from './b.ts';")],
      [b, localImports(b, "export { A } from '#shared/a.ts';")],
    ]);
    expect(cycles(graph)).toEqual(['shared/a.ts -> shared/b.ts -> shared/a.ts']);
  });
});

import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { dirname, resolve } from 'node:path';
import { benchmarks } from './registry.ts';
import type { BenchResult } from './result.ts';

/**
 * `npm run bench` runs every registered benchmark; `npm run bench -- persist [--pages 60]` runs
 * one, passing the remaining arguments to it. Each result is printed as one JSON line (the last
 * line of that benchmark's output) and appended as a dated row to docs/benchmarks.md.
 */
const RESULTS_FILE = resolve(import.meta.dirname, '../docs/benchmarks.md');

const HEADER = `# Benchmarks

Rows are appended by \`npm run bench\` (bench/run.ts); one row per benchmark run. Figures are
whatever the machine in the last column measured: compare rows from the same machine only.

| date | bench | headline figures | machine | command |
| --- | --- | --- | --- | --- |
`;

/** The usage, for every benchmark or for the one named. */
export function usage(name?: string): string {
  const entries = Object.entries(benchmarks).filter(([n]) => !name || n === name);
  const list = entries.map(
    ([n, e]) => `  ${n.padEnd(10)} ${e.description}\n  ${' '.repeat(10)} options: ${e.options}`,
  );
  return [
    name ? `Usage: npm run bench -- ${name} [options]` : 'Usage: npm run bench [-- <name> [options]]',
    '',
    name
      ? 'Runs this benchmark, prints its figures as the last line and appends a row to docs/benchmarks.md.'
      : 'Without a name, runs every benchmark below in turn (about half an hour); each prints its figures\n' +
        'as the last line and appends a row to docs/benchmarks.md.',
    '',
    ...list,
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (argv.includes('--help') || argv.includes('-h')) {
    const named = first && !first.startsWith('-') && benchmarks[first] ? first : undefined;
    console.log(usage(named));
    return 0;
  }
  const names = first && !first.startsWith('-') ? [first] : Object.keys(benchmarks);
  const args = first && !first.startsWith('-') ? rest : argv;
  for (const name of names) {
    const entry = benchmarks[name];
    if (!entry) {
      throw new Error(
        `Unknown benchmark "${name}". Registered: ${Object.keys(benchmarks).join(', ')} (see bench/registry.ts).`,
      );
    }
    console.log(`== ${name}: ${entry.description}`);
    const mod = await entry.load();
    const result = await mod.run(args);
    await record(result, name, commandLine(names.length === 1 ? argv : []));
    console.log(JSON.stringify(result));
  }
  return 0;
}

async function record(result: BenchResult, name: string, command: string): Promise<void> {
  const { bench: _bench, postgres, ...figures } = result;
  const headline = Object.entries(figures)
    .map(([k, v]) => `${k}=${typeof v === 'number' ? v : JSON.stringify(v)}`)
    .join(', ');
  const machine = [
    `${cpus().length} cores`,
    `${Math.round(totalmem() / 2 ** 30)} GiB`,
    `Node ${process.version}`,
    postgres ? `PostgreSQL ${postgres}` : null,
  ]
    .filter(Boolean)
    .join(', ');
  const row = `| ${new Date().toISOString().slice(0, 16).replace('T', ' ')}Z | ${name} | ${cell(headline)} | ${cell(machine)} | \`${cell(command)}\` |\n`;
  await mkdir(dirname(RESULTS_FILE), { recursive: true });
  const existing = await readFile(RESULTS_FILE, 'utf8').catch(() => null);
  if (existing === null) await writeFile(RESULTS_FILE, HEADER + row);
  else if (!existing.includes('| date | bench |'))
    await writeFile(RESULTS_FILE, `${existing}\n${HEADER}${row}`);
  else await appendFile(RESULTS_FILE, row);
  console.log(`${name}: recorded in docs/benchmarks.md`);
}

function cell(s: string): string {
  return s.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

function commandLine(argv: string[]): string {
  const tail = argv.length > 0 ? ` -- ${argv.join(' ')}` : '';
  return process.env.npm_lifecycle_event === 'bench'
    ? `npm run bench${tail}`
    : `tsx bench/run.ts${argv.length ? ` ${argv.join(' ')}` : ''}`;
}

// Bad options end in one line that says what to change, not in a stack trace.
process.exitCode = await main(process.argv.slice(2)).catch((error: unknown) => {
  const e = error as Error & { code?: string };
  const hint = e.code?.startsWith('ERR_PARSE_ARGS') ? ' Run `npm run bench -- --help` for the options.' : '';
  console.error(`error: ${e.message}${hint ? `.${hint}` : ''}`);
  return e.code?.startsWith('ERR_PARSE_ARGS') ? 2 : 1;
});

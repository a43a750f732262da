import { existsSync, lstatSync, readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createSql } from '#shared/db/client.ts';
import { ensureDatabase, openEmbeddedServer } from './environment.ts';

/**
 * `npm run local:db`: the data of `npm run local` without psql. Starts (or re-uses) the embedded
 * PostgreSQL of the data dir and prints its URL until Ctrl-C, or runs one --query and stops.
 */
export const DB_USAGE = `Usage: npm run local:db -- [options]

Opens the embedded PostgreSQL that \`npm run local\` keeps in <data-dir>/postgres.
Without --query it prints the database URL (for psql, a GUI, or DATABASE_URL) and stays up until Ctrl-C.

  --query SQL        run one statement, print its rows (tab-separated, with a header), and stop
  --data-dir DIR     the runner's data dir (default .local)
  --help             this text

Examples:
  npm run local:db -- --query "select type, count(*) from events group by type order by 2 desc"
  npm run local:db -- --query "select s.source_id, s.status, sum(c.events_inserted) as events, sum(c.pages) as pages
    from checkpoints s join checkpoints c on c.source_id = s.source_id or c.chain_of = s.source_id
    where s.chain_of is null group by 1, 2"
    (one line per source: a source read by several cursor chains also has rows <source>~1, <source>~2...
    whose status stays running; the source's own row, chain_of null, holds the source's status)

The data dir holds the database and the run logs (about 1.1 GB after a full 3,000,000-event run).
Remove it with \`rm -rf <data-dir>\` when no run is using it; the next \`npm run local\` starts afresh.`;

export class DbUsageError extends Error {
  override readonly name = 'UsageError';
}

export function parseDbArgs(argv: string[]): { dataDir: string; query: string | null } | 'help' {
  let values: { 'data-dir'?: string; query?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        'data-dir': { type: 'string' },
        query: { type: 'string', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new DbUsageError(
      `${(error as Error).message}. Run \`npm run local:db -- --help\` for the options.`,
    );
  }
  if (values.help) return 'help';
  if (values.query !== undefined && values.query.trim() === '') {
    throw new DbUsageError('--query needs a statement, e.g. --query "select count(*) from events"');
  }
  return { dataDir: values['data-dir'] ?? '.local', query: values.query ?? null };
}

/** Rows as tab-separated text with a header line; objects as JSON, nulls as NULL. */
export function formatRows(rows: readonly Record<string, unknown>[], columns: readonly string[]): string {
  const cell = (v: unknown) =>
    v === null || v === undefined
      ? 'NULL'
      : v instanceof Date
        ? v.toISOString()
        : typeof v === 'object'
          ? JSON.stringify(v)
          : String(v);
  const lines = [columns.join('\t'), ...rows.map((r) => columns.map((c) => cell(r[c])).join('\t'))];
  return `${lines.join('\n')}\n(${rows.length} ${rows.length === 1 ? 'row' : 'rows'})\n`;
}

export function humanSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function sizeOf(path: string): number {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) return 0;
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const name of readdirSync(path)) total += sizeOf(join(path, name));
  return total;
}

async function main(argv: string[]): Promise<number> {
  let args: ReturnType<typeof parseDbArgs>;
  try {
    args = parseDbArgs(argv);
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`);
    return 2;
  }
  if (args === 'help') {
    process.stdout.write(`${DB_USAGE}\n`);
    return 0;
  }
  const dataDir = resolve(args.dataDir);
  if (!existsSync(join(dataDir, 'postgres', 'PG_VERSION'))) {
    process.stderr.write(
      `error: there is no local database in ${dataDir} yet: run \`npm run local\` first (or pass the --data-dir it used)\n`,
    );
    return 1;
  }
  // Listening from the start: a Ctrl-C while the server starts must still stop it.
  let interrupted = false;
  let wake = () => {};
  const onSignal = () => {
    interrupted = true;
    wake();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // Queries print rows only, so a script can read them; the rest goes to stderr.
  const info = (t: string) => (args.query ? process.stderr.write(t) : process.stdout.write(t));
  const server = await openEmbeddedServer(dataDir, info);
  try {
    const url = await ensureDatabase(server.url, 'datasync');
    if (args.query) {
      const sql = createSql(url, { applicationName: 'datasync-local-db' });
      try {
        const result = await sql.unsafe(args.query);
        const columns = result.columns?.map((c) => c.name) ?? [];
        process.stdout.write(
          columns.length
            ? formatRows(result as unknown as Record<string, unknown>[], columns)
            : `${result.command ?? 'OK'}\n`,
        );
        return 0;
      } catch (error) {
        process.stderr.write(`error: the query failed: ${(error as Error).message}\n`);
        return 1;
      } finally {
        await sql.end({ timeout: 5 });
      }
    }
    const rel = relative(process.cwd(), dataDir);
    const shown = rel && !rel.startsWith('..') ? rel : dataDir;
    info(
      `database: ${url}\n` +
        'tables: events, rejected_events, checkpoints (one row per source, plus <source>~N rows for its cursor chains), source_datasets\n' +
        `data: ${dataDir} (${humanSize(sizeOf(dataDir))}); remove it with \`rm -rf ${shown}\` once this is stopped\n` +
        'the server stays up until Ctrl-C\n',
    );
    // A signal listener alone does not keep node running: the timer does, until Ctrl-C.
    const keepAlive = setInterval(() => {}, 1 << 30);
    await new Promise<void>((done) => {
      wake = done;
      if (interrupted) done();
    });
    clearInterval(keepAlive);
    return 0;
  } finally {
    await server.release();
  }
}

// Only as a program: the test imports the helpers above.
if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`error: ${(error as Error).message}\n`);
      process.exit(1);
    },
  );
}

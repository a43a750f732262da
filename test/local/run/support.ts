import { type ChildProcess, spawn } from 'node:child_process';
import { resolve } from 'node:path';
import postgres from 'postgres';

const CLI = resolve(import.meta.dirname, '../../../local/run/cli.ts');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliProcess {
  child: ChildProcess;
  /** The pid of the node process that runs the CLI itself (no npx/tsx wrapper in between). */
  pid: number;
  stdout(): string;
  stderr(): string;
  done: Promise<CliResult>;
}

/**
 * Starts `npm run local` as the real command would run, minus npm: node with the tsx loader, so
 * that a SIGKILL hits the runner itself. Inherited DATABASE_URL / DATASYNC_* never leak in.
 */
export function startCli(args: string[]): CliProcess {
  const env = { ...process.env };
  for (const name of ['DATABASE_URL', 'DATASYNC_API_URL', 'DATASYNC_API_KEY', 'TEST_DATABASE_URL']) {
    delete env[name];
  }
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: resolve(import.meta.dirname, '../../..'),
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const done = new Promise<CliResult>((resolveDone, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolveDone({ code, signal, stdout: out, stderr: err }));
  });
  if (child.pid === undefined) throw new Error('the CLI process did not start');
  return { child, pid: child.pid, stdout: () => out, stderr: () => err, done };
}

export function runCli(args: string[]): Promise<CliResult> {
  return startCli(args).done;
}

export interface JsonSummary {
  status: string;
  sourceId: string;
  events: number;
  distinctIds: number;
  duplicatesSkipped: number;
  rejected: number;
  pages: number;
  requests: number;
  rateLimited: number;
  executions: number;
  invocations?: number;
  chains?: number;
  chainMode?: string | null;
  chainNote?: string | null;
  seconds: number;
  expectedEvents: number | null;
  verified: boolean;
  error?: { name: string; message: string };
}

/** `--json` promises the summary as the last line of stdout. */
export function lastJson(stdout: string): JsonSummary {
  const lines = stdout.trimEnd().split('\n');
  const last = lines[lines.length - 1] ?? '';
  try {
    return JSON.parse(last) as JsonSummary;
  } catch {
    throw new Error(`the last stdout line is not JSON: ${JSON.stringify(last)}\nstdout:\n${stdout}`);
  }
}

/** Non-empty lines of a stream, for "one clear line" assertions. */
export function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

export interface SourceState {
  events: number;
  distinctIds: number;
  rejectedRows: number;
  distinctRejectHashes: number;
  checkpoint: {
    status: string;
    pages: number;
    eventsInserted: number;
    rejected: number;
    leaseOwner: string | null;
  } | null;
}

/** What the database holds for a source; zeros when the tables do not exist yet. */
export async function readSource(url: string, sourceId: string): Promise<SourceState> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [t] = await sql<{ ok: boolean }[]>`select to_regclass('public.checkpoints') is not null as ok`;
    if (!t?.ok)
      return { events: 0, distinctIds: 0, rejectedRows: 0, distinctRejectHashes: 0, checkpoint: null };
    const [e] = await sql<{ n: number; d: number }[]>`
      select count(*)::int as n, count(distinct id)::int as d from events where source_id = ${sourceId}`;
    const [r] = await sql<{ n: number; d: number }[]>`
      select count(*)::int as n, count(distinct raw_hash)::int as d from rejected_events where source_id = ${sourceId}`;
    const [c] = await sql<
      { status: string; pages: number; eventsInserted: number; rejected: number; leaseOwner: string | null }[]
    >`select status, pages::int as "pages", events_inserted::int as "eventsInserted", rejected::int as "rejected",
        lease_owner as "leaseOwner" from checkpoints where source_id = ${sourceId}`;
    return {
      events: e?.n ?? 0,
      distinctIds: e?.d ?? 0,
      rejectedRows: r?.n ?? 0,
      distinctRejectHashes: r?.d ?? 0,
      checkpoint: c ?? null,
    };
  } finally {
    await sql.end();
  }
}

/** Polls until the predicate holds on the source's state (the run is watched through its checkpoint). */
export async function waitForSource(
  url: string,
  sourceId: string,
  predicate: (s: SourceState) => boolean,
  cli?: CliProcess,
): Promise<SourceState> {
  for (;;) {
    const state = await readSource(url, sourceId);
    if (predicate(state)) return state;
    if (cli && cli.child.exitCode !== null) {
      throw new Error(
        `the run exited (${cli.child.exitCode}) before the awaited state:\n${cli.stdout()}\n${cli.stderr()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

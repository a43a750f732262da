import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import type { LocalRunIo } from '#local/run/runner.ts';

/** DATABASE_URL when set (rows are left to the caller to delete), else a throw-away database. */
export async function openTarget(prefix: string): Promise<{
  url: string;
  label: string;
  throwAway: boolean;
  drop(): Promise<void>;
}> {
  const given = process.env.DATABASE_URL;
  if (given) {
    const u = new URL(given);
    return {
      url: given,
      label: `${u.hostname}:${u.port || 5432}${u.pathname}`,
      throwAway: false,
      drop: async () => {},
    };
  }
  const { createTestDatabase } = await import('#local/throwaway-database.ts');
  const db = await createTestDatabase(prefix);
  return { url: db.url, label: `throw-away database ${db.name}`, throwAway: true, drop: () => db.drop() };
}

/** A temporary data directory for a local run (its logs land in `<dir>/logs/<source>.log`). */
export async function tempDataDir(name: string): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `dsi-bench-${name}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** The fields of the step's 'page stored' / 'source complete' log line that the benchmarks read. */
const pageLogSchema = z.object({
  time: z.string(),
  message: z.enum(['page stored', 'source complete', 'range complete', 'range taken over']),
  chain: z.number().optional(),
  upstreamLatencyMs: z.number(),
  persistMs: z.number(),
  page: z.object({ received: z.number(), inserted: z.number() }),
});
export type PageLog = z.infer<typeof pageLogSchema> & { atMs: number };

/**
 * The per-page timings the step already logs: `upstreamLatencyMs` (request sent until the body
 * is read) and `persistMs` (the page's transaction). `atMs` is when the line was written, i.e.
 * just after the page was stored.
 */
/** When the Plan task's request for page one started (epoch ms), if the run planned with one. */
export async function readPlanRequestStart(logFile: string): Promise<number | null> {
  const text = await readFile(logFile, 'utf8');
  for (const line of text.split('\n')) {
    if (!line.includes('"message":"planned')) continue;
    const entry = JSON.parse(line) as { time: string; upstreamLatencyMs?: number };
    if (typeof entry.upstreamLatencyMs === 'number') return Date.parse(entry.time) - entry.upstreamLatencyMs;
  }
  return null;
}

export async function readPageLogs(logFile: string): Promise<PageLog[]> {
  const text = await readFile(logFile, 'utf8').catch((error: unknown) => {
    throw new Error(
      `Cannot read the local run's log ${logFile}: ${(error as Error).message}. The runner writes it under <dataDir>/logs; check that runLocal got the benchmark's dataDir.`,
    );
  });
  const pages: PageLog[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('"upstreamLatencyMs"')) continue;
    const parsed = pageLogSchema.safeParse(JSON.parse(line));
    if (parsed.success) pages.push({ ...parsed.data, atMs: Date.parse(parsed.data.time) });
  }
  return pages;
}

/** Collects the runner's output instead of printing it; `echo` prints the lines that matter. */
export function quietIo(echo: (line: string) => boolean = () => false, pageSize?: number): LocalRunIo {
  const write = (text: string) => {
    for (const line of text.split('\n')) if (line && echo(line)) console.log(`  ${line}`);
  };
  return {
    out: write,
    err: (text) => process.stderr.write(text),
    progressMode: 'none',
    ...(pageSize ? { pageSize } : {}),
  };
}

export async function postgresVersion(url: string): Promise<string> {
  const { createSql } = await import('#shared/db/client.ts');
  const sql = createSql(url, { applicationName: 'datasync-bench' });
  try {
    const [row] = await sql<{ version: string }[]>`
      select split_part(current_setting('server_version'), ' ', 1) as version`;
    return row?.version ?? '?';
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export function positiveInt(value: string | undefined, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`${flag} must be a positive whole number, got "${value}"`);
  return n;
}

export function sum(xs: readonly number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s;
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? 0 : sum(xs) / xs.length;
}

export function percentile(xs: readonly number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? 0;
}

export function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** One rate-limit configuration of the pacing benchmarks (floor, pacer). */
export interface WindowConfig {
  windowSeconds: number;
  windowMode: 'fixed' | 'sliding';
  latencyMs: number;
}

export function windowLabel(c: WindowConfig): string {
  return `${c.windowSeconds}:${c.windowMode}:${c.latencyMs}`;
}

/**
 * The 12 configurations (W = 20, 30, 60 s; fixed and sliding; no latency and 3.5 s), or those
 * `--only 20:fixed:0,60:sliding:3500` names.
 */
export function windowConfigs(only: string | undefined): WindowConfig[] {
  const all: WindowConfig[] = [];
  for (const latencyMs of [0, 3500])
    for (const windowMode of ['fixed', 'sliding'] as const)
      for (const windowSeconds of [20, 30, 60]) all.push({ windowSeconds, windowMode, latencyMs });
  const wanted = only?.split(',').map((s) => s.trim());
  const configs = wanted ? all.filter((c) => wanted.includes(windowLabel(c))) : all;
  if (configs.length === 0)
    throw new Error(
      `--only matched no configuration; use window:mode:latency, e.g. ${all.map(windowLabel).join(',')}`,
    );
  return configs;
}

/**
 * Every benchmark `npm run bench` knows. To add one, write `bench/<name>.ts` exporting
 * `run(args: string[]): Promise<BenchResult>` (print progress with console.log, return the
 * headline figures) and add a line here; the runner prints the result as the last line of
 * output and appends a row to docs/benchmarks.md.
 */
export interface BenchResult {
  /** The benchmark's name, as registered. */
  bench: string;
  /** PostgreSQL server version, when the benchmark talked to one (goes into the machine column). */
  postgres?: string;
  [figure: string]: unknown;
}

export interface BenchModule {
  run(args: string[]): Promise<BenchResult>;
}

export const benchmarks: Record<string, { description: string; load: () => Promise<BenchModule> }> = {
  persist: {
    description: '600 pages x 5000 events through persistPage into PostgreSQL',
    load: () => import('./persist.ts') as Promise<BenchModule>,
  },
};

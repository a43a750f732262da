/** What every benchmark's `run` returns: the headline figures the runner prints and records. */
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

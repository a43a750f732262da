/**
 * Every benchmark `npm run bench` knows. To add one, write `bench/<name>.ts` exporting
 * `run(args: string[]): Promise<BenchResult>` (print progress with console.log, return the
 * headline figures) and add a line here; the runner prints the result as the last line of
 * output and appends a row to docs/benchmarks.md.
 */

import type { BenchModule } from './result.ts';

export interface BenchEntry {
  description: string;
  /** Its options, as `npm run bench -- <name> --help` lists them. */
  options: string;
  load: () => Promise<BenchModule>;
}

export const benchmarks: Record<string, BenchEntry> = {
  simulator: {
    description: 'simulator pages/s over real HTTP, 5000-event pages, no rate limit (bench/simulator.ts)',
    options: '--pages N (default 60), --events N (default 3000000), --chaos',
    load: () => import('./simulator.ts') as Promise<BenchModule>,
  },
  persist: {
    description: '600 pages x 5000 events through persistPage into PostgreSQL',
    options: '--pages N (default 600), --page-size N (default 5000)',
    load: () => import('./persist.ts') as Promise<BenchModule>,
  },
  pipeline: {
    description: '1,000,000 events unthrottled through the state machine, handler and PostgreSQL',
    options: '--events N (default 1000000), --sample N pages timed (default 20)',
    load: () => import('./pipeline.ts') as Promise<BenchModule>,
  },
  memory: {
    description: 'peak RSS of the handler storing 200 pages of 5000 events (child process)',
    options: '--pages N (default 200)',
    load: () => import('./memory.ts') as Promise<BenchModule>,
  },
  oversize: {
    description:
      'peak RSS of one request answered by a 200 MB page or an endless body, byte cap on and off (child processes)',
    options: '--mb N (default 200)',
    load: () => import('./oversize.ts') as Promise<BenchModule>,
  },
  pacer: {
    description:
      'the shared pacer: N chains x 600 requests through PostgreSQL and the simulator, 12 configurations (~10 min)',
    options:
      '--requests N (default 600), --target-seconds S (default 30), --min-spacing-ms MS (default 2200), ' +
      '--margin-ms MS real (default 10), --only NAME, --skip-one-chain (auto chain count only)',
    load: () => import('./pacer.ts') as Promise<BenchModule>,
  },
  topup: {
    description:
      'a top-up over a gap of 200 pages, planned as chains: elapsed / rate-limit bound (time-scaled, ~1 min)',
    options:
      '--gap-pages N (default 200), --page-size N (default 500), --request-floor-ms MS (default 100), --latency-ms MS (default 3500), --chains N|auto',
    load: () => import('./topup.ts') as Promise<BenchModule>,
  },
  family: {
    description:
      'the pacer against every named member of the upstream family, 3 windows x 2 latencies, in virtual time (seconds)',
    options:
      '--requests N (default 600), --chains N (default 3), --seed N, --members a,b, --errors SHARE (5xx, default 0)',
    load: () => import('./family.ts') as Promise<BenchModule>,
  },
  floor: {
    description: 'elapsed / rate-limit floor, 600 pages, 12 time-scaled window configurations (~19 min)',
    options:
      '--pages N (default 600), --page-size N (default 500), --request-floor-ms MS (default 100), ' +
      '--min-spacing-ms MS (default 2200), --only NAME (one configuration)',
    load: () => import('./floor.ts') as Promise<BenchModule>,
  },
};

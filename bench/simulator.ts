import { runChildScript } from './child.ts';

/**
 * The simulator's own benchmark (local/simulator/bench.ts, a script owned with the simulator),
 * run in a child process: it serves and reads 5000-event pages over real HTTP with no rate limit.
 * Arguments are passed through (--pages, --events, --chaos).
 */
export async function run(args: string[]): Promise<{ bench: string; [figure: string]: unknown }> {
  const result = await runChildScript('local/simulator/bench.ts', args);
  return { ...result, bench: 'simulator' };
}

import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { GrowArgs, SimulatorGrowth } from '../simulator/index.ts';
import type { LocalRunOptions } from './options.ts';

/*
 * The bundled simulator's growth, kept between runs: a run that grew the data set (--grow-rate,
 * POST /__sim/grow) appends each growth to a file of the data dir, and the next run of the same
 * data set replays them at start. Growth is a pure function of the data set and the sequence of
 * growths, so the replayed data set is the one the last run served, and a rerun tops up instead
 * of finding an upstream that went back in time. One JSON line per growth: a run killed while
 * writing leaves at most a partial last line, which is skipped.
 */

/** The file of one data set: its size, seed and fault profile name it. */
export function growthFile(
  dataDir: string,
  options: Pick<LocalRunOptions, 'events' | 'seed' | 'chaos'>,
): string {
  return join(
    dataDir,
    'simulator-growth',
    `${options.events}-${options.seed}${options.chaos ? '-chaos' : ''}.jsonl`,
  );
}

export function growthLog(file: string): Required<SimulatorGrowth> {
  const replay: GrowArgs[] = [];
  if (existsSync(file)) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line.trim() === '') continue;
      try {
        replay.push(JSON.parse(line) as GrowArgs);
      } catch {
        // A partial last line of a killed run.
      }
    }
  }
  return {
    replay,
    onGrow(args) {
      mkdirSync(join(file, '..'), { recursive: true });
      appendFileSync(file, `${JSON.stringify(args)}\n`);
    },
  };
}

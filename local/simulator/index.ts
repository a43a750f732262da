import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createDataset, type Dataset, type GrowArgs } from './dataset.ts';
import { resolveSimulatorOptions, type SimulatorOptions, type SimulatorOptionsInput } from './options.ts';
import { createRequestHandler, type GrowthHooks, type SimStats } from './server.ts';

export { BUILT_CURSOR_MODES, type BuiltCursorMode } from './cursor-position.ts';
export {
  createDataset,
  type Dataset,
  type DatasetOptions,
  type EventFault,
  type EventFaultRates,
  type GrowArgs,
  type GrowResult,
  type SimEvent,
  type TimestampSkew,
} from './dataset.ts';
export { DEFAULT_LATENCY, LIVE_LATENCY_JITTER_MS, LIVE_LATENCY_MS } from './latency.ts';
export {
  CHAOS_PROFILE,
  DEFAULT_API_KEY,
  parseSimulatorArgs,
  resolveSimulatorOptions,
  SIMULATOR_DEFAULTS,
  type SimulatorOptions,
  type SimulatorOptionsInput,
} from './options.ts';
export type { GrowthHooks, SimStats } from './server.ts';

export interface RunningSimulator {
  /** Base URL including `/api/v1`, e.g. `http://127.0.0.1:4010/api/v1`. */
  url: string;
  port: number;
  options: SimulatorOptions;
  dataset: Dataset;
  stats(): SimStats;
  close(): Promise<void>;
}

/** Growth a simulator starts with and reports (the local runner keeps it between runs). */
export interface SimulatorGrowth extends GrowthHooks {
  /** Growths to apply at start, in order: the same data set a previous run of these options grew to. */
  replay?: GrowArgs[];
}

/**
 * `growRate` events a second (the client's seconds, so a time scale speeds it up), applied about
 * ten times a second; the shares of late ones carried over between ticks so that long runs hit
 * them exactly. Null when the data set does not grow.
 */
function startGrowing(options: SimulatorOptions, dataset: Dataset, hooks: GrowthHooks) {
  if (options.growRate <= 0) return undefined;
  const tickMs = 100;
  let carry = 0;
  let lateCarry = 0;
  let beyondCarry = 0;
  const timer = setInterval(() => {
    carry += (options.growRate * options.timeScale * tickMs) / 1000;
    const n = Math.floor(carry);
    if (n === 0) return;
    carry -= n;
    lateCarry += n * options.growLateShare;
    beyondCarry += n * options.growBeyondShare;
    const late = Math.min(n, Math.floor(lateCarry));
    lateCarry -= late;
    const beyond = Math.min(n - late, Math.floor(beyondCarry));
    beyondCarry -= beyond;
    const args = {
      newer: n - late - beyond,
      lateWithin: late,
      lateBeyond: beyond,
      lookbackMs: Math.round(options.growLateSeconds * 1000),
    };
    try {
      dataset.grow(args);
      hooks.onGrow?.(args);
    } catch {
      // At the growth cap the data set stays as it is.
      clearInterval(timer);
    }
  }, tickMs);
  timer.unref();
  return timer;
}

/** The data set a simulator with these options serves (same seed, size and per-event faults). */
export function datasetFor(options: SimulatorOptions): Dataset {
  return createDataset({
    events: options.events,
    seed: options.seed,
    faults: {
      malformedTimestampRate: options.malformedTimestampRate,
      missingFieldRate: options.missingFieldRate,
      epochSecondsRate: options.epochSecondsRate,
      controlCharRate: options.controlCharRate,
      deepPropertiesRate: options.deepPropertiesRate,
      unexactNumberRate: options.unexactNumberRate,
      unknownTypeRate: options.unknownTypeRate,
    },
    skew:
      options.timestampSkew > 0 ? { share: options.timestampSkew, bursts: options.skewBursts } : undefined,
  });
}

/**
 * Starts the DataSync API simulator on 127.0.0.1 (port 0 = a free port). Options are validated
 * (ConfigError names the bad one) and defaulted as documented in local/simulator/README.md.
 */
export async function startSimulator(
  input: SimulatorOptionsInput = {},
  growth: SimulatorGrowth = {},
): Promise<RunningSimulator> {
  const options = resolveSimulatorOptions(input);
  const dataset = datasetFor(options);
  for (const args of growth.replay ?? []) dataset.grow(args);
  const handler = createRequestHandler(options, dataset, growth);
  const grower = startGrowing(options, dataset, growth);
  const server = createServer((req, res) => {
    handler.handle(req, res).catch((error: unknown) => {
      // A bug in the simulator must surface in the client as a 500, not a hung socket.
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(`simulator error: ${(error as Error).message}`);
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${options.host}:${port}/api/v1`,
    port,
    options,
    dataset,
    stats: handler.stats,
    close: () =>
      new Promise<void>((resolve, reject) => {
        clearInterval(grower);
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

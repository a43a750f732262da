import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createDataset, type Dataset } from './dataset.ts';
import { resolveSimulatorOptions, type SimulatorOptions, type SimulatorOptionsInput } from './options.ts';
import { createRequestHandler, type SimStats } from './server.ts';

export { BUILT_CURSOR_MODES, type BuiltCursorMode } from './cursor-position.ts';
export {
  createDataset,
  type Dataset,
  type DatasetOptions,
  type EventFault,
  type EventFaultRates,
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
export type { SimStats } from './server.ts';

export interface RunningSimulator {
  /** Base URL including `/api/v1`, e.g. `http://127.0.0.1:4010/api/v1`. */
  url: string;
  port: number;
  options: SimulatorOptions;
  dataset: Dataset;
  stats(): SimStats;
  close(): Promise<void>;
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
export async function startSimulator(input: SimulatorOptionsInput = {}): Promise<RunningSimulator> {
  const options = resolveSimulatorOptions(input);
  const dataset = datasetFor(options);
  const handler = createRequestHandler(options, dataset);
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
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

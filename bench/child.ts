import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..');

/**
 * Runs a TypeScript script in a child Node process (through tsx), echoing its output indented,
 * and returns the object on its last JSON line. Benchmarks that measure a process's own memory or
 * CPU run this way so the bench runner's own use does not count.
 */
export async function runChildScript(script: string, args: string[]): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, ['--import', 'tsx', resolve(ROOT, script), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let buffered = '';
  let lastJson: string | null = null;
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      if (line.startsWith('{')) lastJson = line;
      else if (line.trim()) console.log(`  ${line}`);
    }
  });
  const code = await new Promise<number | null>((res, rej) => {
    child.once('error', rej);
    child.once('close', res);
  });
  if (buffered.startsWith('{')) lastJson = buffered;
  if (code !== 0 || lastJson === null) {
    throw new Error(
      `${script} exited with code ${code}${lastJson === null ? ' without a JSON result line' : ''}: see its output above; run \`npx tsx ${script}\` alone to investigate.`,
    );
  }
  return JSON.parse(lastJson) as Record<string, unknown>;
}

import type { ChildProcess } from 'node:child_process';

/** What a finished child process said and how it ended. */
export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Set when the process could not be started at all (ENOENT, EACCES). */
  error?: Error;
}

/** Collects a child's piped stdout and stderr until it closes; never rejects. */
export function collectOutput(child: ChildProcess): Promise<ChildResult> {
  return new Promise((done) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.once('error', (error) => done({ code: null, signal: null, stdout, stderr, error }));
    child.once('close', (code, signal) => done({ code, signal, stdout, stderr }));
  });
}

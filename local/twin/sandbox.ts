import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { InvokeMessage, SandboxMessage } from './runtime.ts';

/** The bootstrap each sandbox runs (plain TypeScript that Node 24 runs as it is). */
export const RUNTIME_FILE = join(import.meta.dirname, 'runtime.ts');

/**
 * A function invocation that failed as Step Functions reports it: `name` is the error name its
 * Retry and Catch match (the function's own error name, or Lambda's for a lost sandbox).
 */
export class InvocationError extends Error {
  constructor(
    override readonly name: string,
    message: string,
  ) {
    super(message);
  }
}

/** One function of the template, ready to run: its bundle, handler, limits and environment. */
export interface FunctionSpec {
  /** The template's logical id, e.g. `FetchPageFunction1A2B3C4D`. */
  logicalId: string;
  /** The local ARN its references resolve to. */
  arn: string;
  /** The asset folder in the cloud assembly (what Lambda unpacks to /var/task). */
  assetDir: string;
  /** The template's `Handler`, e.g. `index.handler`. */
  handler: string;
  timeoutSeconds: number;
  memoryMb: number;
  /** The whole environment of the process: the template's variables, resolved, plus Lambda's own. */
  env: Record<string, string>;
}

/** What a sandbox reports while it runs an invocation (the fetch observation of runtime.ts). */
export interface InvocationEvents {
  /** `kill` SIGKILLs the sandbox if it is still in this invocation (true), else does nothing (false). */
  onFetchStart?: (kill: () => boolean) => void;
  onFetchHeaders?: (status: number | undefined) => void;
}

interface Sandbox {
  id: number;
  child: ChildProcess;
  busy: boolean;
  /** Set once the bootstrap loaded the bundle (or failed to). */
  ready: Promise<void>;
  current: {
    requestId: string;
    resolve: (value: unknown) => void;
    reject: (error: Error) => void;
    events: InvocationEvents;
  } | null;
  exited: boolean;
}

export interface SandboxStats {
  /** Sandboxes started: one per cold start. */
  coldStarts: number;
  invocations: number;
  /** Sandboxes killed by the function timeout. */
  timeouts: number;
  /** Sandboxes that died during an invocation (a SIGKILL, a crash). */
  lost: number;
}

/**
 * A function as Lambda runs it: each invocation goes to an idle sandbox (warm) or a new child
 * process (cold start) of the Node 24 binary, concurrent invocations to separate sandboxes, as
 * the Map's chains get separate execution environments in the cloud. A sandbox that outlives the
 * function's timeout is killed and the invocation fails with `Sandbox.Timedout`; one that dies
 * mid-invocation fails it with `Lambda.Unknown` (Runtime.ExitError), which is what Step Functions
 * reports for a runtime that exited; the function's own error keeps its name.
 */
export class FunctionSandboxes {
  readonly stats: SandboxStats = { coldStarts: 0, invocations: 0, timeouts: 0, lost: 0 };
  /** What `process.version` said inside the sandboxes that loaded the bundle. */
  readonly nodeVersions = new Set<string>();
  private readonly pool: Sandbox[] = [];
  private nextId = 1;

  constructor(
    readonly spec: FunctionSpec,
    private readonly nodeBinary: string,
    /** Where the sandboxes' stdout and stderr go (the function's log lines). */
    private readonly output: (sandboxId: number, chunk: string) => void,
  ) {}

  async invoke(payload: unknown, events: InvocationEvents = {}): Promise<unknown> {
    this.stats.invocations++;
    const sandbox = this.pool.find((s) => !s.busy && !s.exited) ?? this.start();
    sandbox.busy = true;
    try {
      await sandbox.ready;
      return await this.run(sandbox, payload, events);
    } finally {
      sandbox.busy = false;
      if (sandbox.exited) this.pool.splice(this.pool.indexOf(sandbox), 1);
    }
  }

  /** Stops every sandbox (the end of a run). */
  async close(): Promise<void> {
    await Promise.all(
      this.pool.map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.exited) return resolve();
            s.child.once('exit', () => resolve());
            s.child.kill('SIGKILL');
          }),
      ),
    );
    this.pool.length = 0;
  }

  private start(): Sandbox {
    this.stats.coldStarts++;
    const id = this.nextId++;
    const child = fork(RUNTIME_FILE, [], {
      execPath: this.nodeBinary,
      // Not the parent's flags (tsx's loader): the sandbox runs the bundle with Node 24 alone.
      execArgv: [],
      cwd: this.spec.assetDir,
      env: this.spec.env,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'json',
      // Its own process group: a Ctrl-C on the terminal stops the run, not the function mid-step
      // (runtime.ts exits when the parent is gone).
      detached: true,
    });
    // A send to a process that was just killed fails with EPIPE: its exit handler reports the loss.
    child.on('error', () => {});
    child.stdout?.on('data', (d: Buffer) => this.output(id, d.toString()));
    child.stderr?.on('data', (d: Buffer) => this.output(id, d.toString()));
    let settleReady: (error?: Error) => void = () => {};
    const ready = new Promise<void>((resolve, reject) => {
      settleReady = (error) => (error ? reject(error) : resolve());
    });
    // An init failure is reported by the invocation that awaits it; until then it is not unhandled.
    ready.catch(() => undefined);
    const sandbox: Sandbox = { id, child, busy: false, ready, current: null, exited: false };
    child.on('message', (message: SandboxMessage) => {
      if (message.type === 'ready') {
        this.nodeVersions.add(message.node);
        settleReady();
      } else if (message.type === 'init-error') {
        settleReady(new InvocationError(message.errorType, message.errorMessage));
        // Lambda initialises a new environment for the next invocation.
        sandbox.exited = true;
        child.kill('SIGKILL');
      } else if (message.type === 'fetch') {
        const cur = sandbox.current;
        if (!cur || message.requestId !== cur.requestId) return;
        const requestId = cur.requestId;
        const kill = () =>
          sandbox.current?.requestId === requestId && !sandbox.exited && child.kill('SIGKILL');
        if (message.phase === 'start') cur.events.onFetchStart?.(kill);
        else cur.events.onFetchHeaders?.(message.status);
      } else if (message.type === 'result') {
        const cur = sandbox.current;
        if (!cur || message.requestId !== cur.requestId) return;
        sandbox.current = null;
        if (message.ok) cur.resolve(message.value);
        else cur.reject(new InvocationError(message.errorType, message.errorMessage));
      }
    });
    child.once('exit', (code, signal) => {
      sandbox.exited = true;
      const said = signal ? `signal: ${signal === 'SIGKILL' ? 'killed' : signal}` : `exit status ${code}`;
      settleReady(
        new InvocationError('Lambda.Unknown', `Runtime.ExitError: Runtime exited with error: ${said} (init)`),
      );
      const cur = sandbox.current;
      sandbox.current = null;
      cur?.reject(
        new InvocationError(
          'Lambda.Unknown',
          `RequestId: ${cur.requestId} Error: Runtime exited with error: ${said} (Runtime.ExitError)`,
        ),
      );
    });
    this.pool.push(sandbox);
    return sandbox;
  }

  private run(sandbox: Sandbox, payload: unknown, events: InvocationEvents): Promise<unknown> {
    if (sandbox.exited) {
      return Promise.reject(new InvocationError('Lambda.Unknown', 'Runtime exited before the invocation'));
    }
    const requestId = randomUUID();
    const timeoutMs = this.spec.timeoutSeconds * 1000;
    const message: InvokeMessage = {
      type: 'invoke',
      requestId,
      payload,
      deadlineMs: Date.now() + timeoutMs,
      functionArn: this.spec.arn,
    };
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (sandbox.current?.requestId !== requestId) return;
        sandbox.current = null;
        this.stats.timeouts++;
        // Lambda resets the execution environment of a timed-out invocation.
        sandbox.child.kill('SIGKILL');
        reject(
          new InvocationError(
            'Sandbox.Timedout',
            `RequestId: ${requestId} Error: Task timed out after ${this.spec.timeoutSeconds.toFixed(2)} seconds`,
          ),
        );
      }, timeoutMs);
      const done =
        <T>(fn: (v: T) => void) =>
        (v: T) => {
          clearTimeout(timer);
          fn(v);
        };
      sandbox.current = {
        requestId,
        resolve: done(resolve),
        reject: done((error: Error) => {
          if (error.name === 'Lambda.Unknown') this.stats.lost++;
          reject(error);
        }),
        events,
      };
      sandbox.child.send(message);
    });
  }
}

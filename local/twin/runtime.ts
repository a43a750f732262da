/**
 * The twin's stand-in for the Lambda runtime interface client, run by the Node 24 binary itself
 * (type stripping: this file uses erasable TypeScript only and imports nothing but node:*). It is
 * one sandbox: it loads the bundle named by LAMBDA_TASK_ROOT and _HANDLER at start (Lambda's init
 * phase), then runs one invocation at a time as the parent sends them over IPC, with a Lambda
 * context whose remaining time counts down to the function's timeout.
 *
 * It also reports when the bundle's fetch starts and when its answer's headers arrive, the way
 * an extension observes a function: the parent uses that to kill the sandbox with its page request
 * in flight. The bundle's bytes and its view of the world are unchanged (fetch still goes out).
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** Parent to sandbox. */
export interface InvokeMessage {
  type: 'invoke';
  requestId: string;
  payload: unknown;
  /** Epoch milliseconds at which the function times out. */
  deadlineMs: number;
  /** The context's invokedFunctionArn. */
  functionArn: string;
}

/** Sandbox to parent. */
export type SandboxMessage =
  | { type: 'ready'; initMs: number; node: string }
  | { type: 'init-error'; errorType: string; errorMessage: string }
  | { type: 'fetch'; requestId: string | null; phase: 'start' | 'headers'; status?: number }
  | { type: 'result'; requestId: string; ok: true; value: unknown }
  | { type: 'result'; requestId: string; ok: false; errorType: string; errorMessage: string };

type Handler = (event: unknown, context: Record<string, unknown>) => Promise<unknown>;

function send(message: SandboxMessage): void {
  process.send?.(message);
}

/** What Lambda puts in `errorType`: the error's name ("Error" for anything that is not one). */
function errorParts(error: unknown): { errorType: string; errorMessage: string } {
  if (error instanceof Error) return { errorType: error.name || 'Error', errorMessage: error.message };
  return { errorType: 'Error', errorMessage: String(error) };
}

let current: string | null = null;

const realFetch = globalThis.fetch;
globalThis.fetch = async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
  const requestId = current;
  send({ type: 'fetch', requestId, phase: 'start' });
  const res = await realFetch(input, init);
  send({ type: 'fetch', requestId, phase: 'headers', status: res.status });
  return res;
};

async function load(): Promise<Handler> {
  const root = process.env.LAMBDA_TASK_ROOT;
  const spec = process.env._HANDLER;
  if (!root || !spec?.includes('.')) {
    throw Object.assign(new Error(`LAMBDA_TASK_ROOT (${root}) and _HANDLER (${spec}) must name the bundle`), {
      name: 'Runtime.InvalidEntrypoint',
    });
  }
  const dot = spec.lastIndexOf('.');
  const file = join(root, `${spec.slice(0, dot)}.mjs`);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (error) {
    const { errorMessage } = errorParts(error);
    throw Object.assign(new Error(`Error: Cannot load ${file}: ${errorMessage}`), {
      name: 'Runtime.ImportModuleError',
    });
  }
  const handler = mod[spec.slice(dot + 1)];
  if (typeof handler !== 'function') {
    throw Object.assign(new Error(`${file} does not export ${spec.slice(dot + 1)} as a function`), {
      name: 'Runtime.HandlerNotFound',
    });
  }
  return handler as Handler;
}

const initStarted = Date.now();
const loaded = load().then(
  (handler) => {
    send({ type: 'ready', initMs: Date.now() - initStarted, node: process.version });
    return handler;
  },
  (error: unknown) => {
    send({ type: 'init-error', ...errorParts(error) });
    return null;
  },
);

const env = process.env;
const functionName = env.AWS_LAMBDA_FUNCTION_NAME ?? 'function';

process.on('message', (message: InvokeMessage) => {
  if (message?.type !== 'invoke') return;
  void (async () => {
    const handler = await loaded;
    if (!handler) return;
    current = message.requestId;
    const context = {
      awsRequestId: message.requestId,
      functionName,
      functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION ?? '$LATEST',
      invokedFunctionArn: message.functionArn,
      memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE ?? '128',
      logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME ?? `/aws/lambda/${functionName}`,
      logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME ?? randomUUID(),
      callbackWaitsForEmptyEventLoop: true,
      getRemainingTimeInMillis: () => Math.max(0, message.deadlineMs - Date.now()),
    };
    try {
      const value = await handler(message.payload ?? {}, context);
      // What Lambda returns is the JSON of the value: undefined becomes null, Dates strings.
      const json = JSON.stringify(value);
      send({
        type: 'result',
        requestId: message.requestId,
        ok: true,
        value: json === undefined ? null : JSON.parse(json),
      });
    } catch (error) {
      send({ type: 'result', requestId: message.requestId, ok: false, ...errorParts(error) });
    } finally {
      current = null;
    }
  })();
});

// The parent gone means the sandbox is gone: no orphan keeps a database connection open.
process.on('disconnect', () => process.exit(0));

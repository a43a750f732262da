import { parseArgs } from 'node:util';
import type { TwinOptions, TwinSummary } from './runner.ts';

/** The options of `npm run twin` and the text of its summary. */

export const TWIN_USAGE = `npm run twin [-- options]

Synthesizes the app (cdk synth, local esbuild), then runs the template's own state machine with
aws-local-stepfunctions, every task invoking the bundled function from cdk.out in a Node 24 process
with the template's environment, secrets from a local Secrets Manager endpoint and TLS verified
against a local CA; ingests the simulator's events and SIGKILLs one function process mid-page.

  --events N          events the simulator serves (default 50000)
  --kill-page N       SIGKILL the function process of the N-th FetchPage invocation (default 3; 0: none)
  --kill-delay-ms MS  how long after that invocation's request started (default 1000)
  --latency-ms MS     simulator latency of a 5000-event page, or live (default live: 3.5-4 s)
  --page-size N       the stack's pageSize context (default: the stack's, 5000)
  --data-dir DIR      where the assembly, the CA, the logs and the Node 24 tool folder go (default .local)
  --json              the last line is a JSON summary
  --help`;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

function whole(name: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new UsageError(`--${name} must be a whole number of at least ${min}, got ${value}`);
  return n;
}

export function parseTwinArgs(argv: string[]): (TwinOptions & { json: boolean }) | 'help' {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        events: { type: 'string' },
        'kill-page': { type: 'string' },
        'kill-delay-ms': { type: 'string' },
        'latency-ms': { type: 'string' },
        'page-size': { type: 'string' },
        'data-dir': { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}\n\n${TWIN_USAGE}`);
  }
  if (values.help) return 'help';
  const str = (k: string) => values[k] as string | undefined;
  const killPage = whole('kill-page', str('kill-page'), 3, 0);
  const latency = str('latency-ms');
  const pageSize = str('page-size');
  return {
    events: whole('events', str('events'), 50_000, 1),
    kill:
      killPage === 0
        ? null
        : { page: killPage, delayMs: whole('kill-delay-ms', str('kill-delay-ms'), 1000, 0) },
    latencyMs: latency === undefined || latency === 'live' ? 'live' : whole('latency-ms', latency, 0, 0),
    context: pageSize === undefined ? {} : { pageSize: String(whole('page-size', pageSize, 0, 1)) },
    ...(str('data-dir') ? { dataDir: str('data-dir') } : {}),
    json: values.json === true,
  };
}

export function describeSummary(s: TwinSummary): string {
  const n = (v: number) => v.toLocaleString('en-US');
  const lines = [
    `events: ${n(s.events)} stored, ${n(s.distinctIds)} distinct ids, ${n(s.expectedEvents)} served by the simulator`,
    `exact: ${s.exact ? 'yes' : `no (${s.problem})`}`,
    `node: the bundles ran on ${s.node.sandboxes.join(', ') || 'no sandbox'} (tool binary ${s.node.binary})`,
    `sandboxes: ${s.sandboxes.invocations} invocations, ${s.sandboxes.coldStarts} cold starts, ${s.sandboxes.lost} lost, ${s.sandboxes.timeouts} timed out`,
    `executions: ${s.executions}; migrate returned ${JSON.stringify(s.migrate)}`,
    s.kill
      ? `resume: the sandbox of FetchPage invocation ${s.kill.invocation} was SIGKILLed ${s.kill.afterRequestMs} ms after its request started (${s.kill.answerArrived ? 'answer arrived' : 'request in flight'}), reported as ${s.kill.reportedAs}; the run went on and ended ${s.exact ? 'exact' : 'NOT exact'}`
      : 'resume: no kill requested',
    `secrets read: ${Object.entries(s.secretReads)
      .map(([id, c]) => `${id.replace(/^.*:secret:/, '')} x${c}`)
      .join(', ')}`,
    `tls: verify-full against ${s.tls.verifiedBy}; ${s.tls.server}`,
    `time: ${s.seconds.toFixed(1)} s (synth ${s.synthSeconds.toFixed(1)} s); logs in ${s.logDir}`,
  ];
  if (s.error) lines.push(`error: ${s.error.name}: ${s.error.message}`);
  return lines.join('\n');
}

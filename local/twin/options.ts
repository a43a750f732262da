import { parseArgs } from 'node:util';
import type { KillPlan, TwinOptions, TwinSummary } from './runner.ts';

/** The default kills: one with the page request in flight, one once its answer is in. */
export const DEFAULT_KILLS: KillPlan[] = [
  { page: 3, anchor: 'request', delayMs: 1000 },
  { page: 6, anchor: 'answer', delayMs: 50 },
];

function killPlan(text: string): KillPlan {
  const m = /^(\d+):(request|answer):(\d+)$/.exec(text);
  if (!m || Number(m[1]) < 1) {
    throw new UsageError(
      `--kill must look like PAGE:request:MS or PAGE:answer:MS (PAGE from 1), got ${text}`,
    );
  }
  return { page: Number(m[1]), anchor: m[2] as KillPlan['anchor'], delayMs: Number(m[3]) };
}

/** The options of `npm run twin` and the text of its summary. */

export const TWIN_USAGE = `npm run twin [-- options]

Synthesizes the app (cdk synth, local esbuild), then runs the template's own state machine with
aws-local-stepfunctions, every task invoking the bundled function from cdk.out in a Node 24 process
with the template's environment, secrets from a local Secrets Manager endpoint and TLS verified
against a local CA; ingests the simulator's events and SIGKILLs one function process mid-page.

  --events N          events the simulator serves (default 50000)
  --kill PAGE:AT:MS   SIGKILL the function process of the PAGE-th FetchPage invocation MS milliseconds
                      after its request started (AT = request) or its answer arrived (AT = answer);
                      repeatable (default: 3:request:1000 and 6:answer:50)
  --no-kill           no SIGKILL
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
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        events: { type: 'string' },
        kill: { type: 'string', multiple: true },
        'no-kill': { type: 'boolean' },
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
  const given = (values.kill as string[] | undefined) ?? [];
  if (values['no-kill'] && given.length > 0) throw new UsageError('--no-kill and --kill exclude each other');
  const kills = values['no-kill'] ? [] : given.length > 0 ? given.map(killPlan) : DEFAULT_KILLS;
  const latency = str('latency-ms');
  const pageSize = str('page-size');
  return {
    events: whole('events', str('events'), 50_000, 1),
    kills,
    latencyMs: latency === undefined || latency === 'live' ? 'live' : whole('latency-ms', latency, 0, 0),
    context: pageSize === undefined ? {} : { pageSize: String(whole('page-size', pageSize, 0, 1)) },
    ...(str('data-dir') ? { dataDir: str('data-dir') } : {}),
    json: values.json === true,
  };
}

export function describeSummary(s: TwinSummary): string {
  const n = (v: number) => v.toLocaleString('en-US');
  const lines = [
    `status: ${s.status}${s.status === 'interrupted' ? ' (Ctrl-C): run npm run twin again to start over' : ''}`,
    `events: ${n(s.events)} stored, ${n(s.distinctIds)} distinct ids, ${n(s.expectedEvents)} served by the simulator`,
    `exact: ${s.exact ? 'yes' : `no (${s.problem})`}`,
    `node: the bundles ran on ${s.node.sandboxes.join(', ') || 'no sandbox'} (tool binary ${s.node.binary})`,
    `sandboxes: ${s.sandboxes.invocations} invocations, ${s.sandboxes.coldStarts} cold starts, ${s.sandboxes.lost} lost, ${s.sandboxes.timeouts} timed out`,
    `executions: ${s.executions}; FetchPage steps completed: ${Object.entries(s.steps)
      .map(([k, v]) => `${v} ${k}`)
      .join(', ')}; migrate returned ${JSON.stringify(s.migrate)}`,
    ...(s.kills.length === 0
      ? ['resume: no kill requested']
      : s.kills.map(
          (k) =>
            `resume: the function process of FetchPage invocation ${k.invocation} was SIGKILLed ${k.delayMs} ms after its ${k.anchor === 'request' ? 'request started' : 'answer arrived'} (${k.answerArrived ? 'answer received' : 'request in flight'}), reported as ${k.reportedAs}`,
        )),
    ...(s.kills.length > 0 ? [`resume: the run went on and ended ${s.exact ? 'exact' : 'NOT exact'}`] : []),
    `secrets read: ${Object.entries(s.secretReads)
      .map(([id, c]) => `${id.replace(/^.*:secret:/, '')} x${c}`)
      .join(', ')}`,
    `tls: verify-full against ${s.tls.verifiedBy}; ${s.tls.server}`,
    `time: ${s.seconds.toFixed(1)} s (synth ${s.synthSeconds.toFixed(1)} s); logs in ${s.logDir}`,
  ];
  if (s.error) lines.push(`error: ${s.error.name}: ${s.error.message}`);
  return lines.join('\n');
}

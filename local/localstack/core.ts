import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SFNClient } from '@aws-sdk/client-sfn';
import { startIngestion } from '#ops/executions.ts';
import { type CheckpointView, ingestionStatus, type StatusReport } from '#ops/progress.ts';
import { ConfigError } from '#shared/errors.ts';
import { createProgressReporter } from '../run/progress.ts';

/** Where LocalStack listens (edge port) and what the compose file publishes on the host. */
export const LOCALSTACK_ENDPOINT = 'http://localhost:4566';
export const COMPOSE_PROJECT = 'datasync-localstack';
export const COMPOSE_FILE = 'local/localstack/docker-compose.yml';
export const OUTPUTS_FILE = '.local/localstack-outputs.json';
/** The compose PostgreSQL as seen from the host (published on 5433). */
export const LOCALSTACK_DATABASE_URL = 'postgres://postgres:postgres@127.0.0.1:5433/datasync';

/**
 * S3 through LocalStack's virtual-host name: CDK addresses asset buckets as subdomains, and
 * `localhost.localstack.cloud` resolves (with its subdomains) to 127.0.0.1.
 */
export const LOCALSTACK_S3_ENDPOINT = 'http://s3.localhost.localstack.cloud:4566';

/**
 * LocalStack accepts any credentials; the SDK and cdklocal still want some. cdklocal 3.x refuses
 * AWS_ENDPOINT_URL without AWS_ENDPOINT_URL_S3 (it cannot tell whether the endpoint serves
 * bucket subdomains), so both are set.
 */
export const LOCALSTACK_ENV: Record<string, string> = {
  AWS_ACCESS_KEY_ID: 'test',
  AWS_SECRET_ACCESS_KEY: 'test',
  AWS_DEFAULT_REGION: 'us-east-1',
  AWS_REGION: 'us-east-1',
  AWS_ENDPOINT_URL: LOCALSTACK_ENDPOINT,
  AWS_ENDPOINT_URL_S3: LOCALSTACK_S3_ENDPOINT,
  CDK_DISABLE_VERSION_CHECK: '1',
};

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}
/** Runs a command (inheriting the terminal when `interactive`). Injected so tests see the exact commands. */
export type Exec = (
  command: string,
  args: string[],
  opts?: { env?: Record<string, string>; interactive?: boolean },
) => Promise<ExecResult>;

export interface LocalStackDeps {
  exec: Exec;
  sfn: Pick<SFNClient, 'send'>;
  readCheckpoint: (sourceId: string) => Promise<CheckpointView | null>;
  out: (text: string) => void;
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  /** The repository root (outputs file and compose file are relative to it). */
  cwd: string;
}

export class DockerUnavailableError extends ConfigError {}

/**
 * Every LocalStack command needs a Docker engine: without one, this says so first, instead of a
 * later "is LocalStack up?" that sends the user looking for the wrong thing.
 */
export async function requireDocker(deps: Pick<LocalStackDeps, 'exec'>): Promise<void> {
  const info = await deps.exec('docker', ['info', '--format', '{{.ServerVersion}}']);
  if (info.code !== 0) {
    throw new DockerUnavailableError(
      `No Docker engine is reachable (\`docker info\` failed: ${firstLine(info.stderr) || `exit ${info.code}`}). ` +
        'The LocalStack setup runs LocalStack, PostgreSQL, the simulator and the Lambdas in containers: install or start Docker ' +
        '(LocalStack images after 4.14 also need LOCALSTACK_AUTH_TOKEN exported), ' +
        'or use `npm run local`, which needs only Node.js.',
    );
  }
}

/** `docker compose` (v2 plugin) when present, else the v1 `docker-compose` binary. */
async function composeCommand(deps: LocalStackDeps): Promise<{ command: string; prefix: string[] }> {
  await requireDocker(deps);
  const v2 = await deps.exec('docker', ['compose', 'version']);
  if (v2.code === 0) return { command: 'docker', prefix: ['compose'] };
  const v1 = await deps.exec('docker-compose', ['version']);
  if (v1.code === 0) return { command: 'docker-compose', prefix: [] };
  throw new DockerUnavailableError(
    'Neither `docker compose` (the Compose v2 plugin) nor `docker-compose` is installed: install the Compose plugin.',
  );
}

export async function up(deps: LocalStackDeps): Promise<void> {
  const compose = await composeCommand(deps);
  const r = await deps.exec(
    compose.command,
    [...compose.prefix, '-p', COMPOSE_PROJECT, '-f', COMPOSE_FILE, 'up', '-d'],
    { interactive: true },
  );
  if (r.code !== 0) {
    throw new ConfigError(
      `\`${compose.command} ${compose.prefix.join(' ')} up\` failed (exit ${r.code}). If the LocalStack container exits at once, ` +
        'the image needs LOCALSTACK_AUTH_TOKEN (images after 4.14): export it, or keep the default 4.14 tag.',
    );
  }
  deps.out(
    `LocalStack on ${LOCALSTACK_ENDPOINT}, PostgreSQL on 127.0.0.1:5433, simulator on http://127.0.0.1:4010/api/v1\n`,
  );
}

export async function down(deps: LocalStackDeps): Promise<void> {
  const compose = await composeCommand(deps);
  await deps.exec(
    compose.command,
    [...compose.prefix, '-p', COMPOSE_PROJECT, '-f', COMPOSE_FILE, 'down', '-v'],
    {
      interactive: true,
    },
  );
}

/** Bootstraps LocalStack's CDK environment and deploys the `target=localstack` variant of the stack. */
export async function deploy(deps: LocalStackDeps): Promise<void> {
  await requireDocker(deps);
  const common = { env: LOCALSTACK_ENV, interactive: true };
  const boot = await deps.exec(
    'npx',
    ['cdklocal', 'bootstrap', '--no-notices', '-c', 'target=localstack'],
    common,
  );
  if (boot.code !== 0) {
    throw new ConfigError(
      `cdklocal bootstrap failed (exit ${boot.code}); Docker is running, so is LocalStack? Run \`npm run localstack:up\` first ` +
        '(its container exits at once on images after 4.14 without LOCALSTACK_AUTH_TOKEN).',
    );
  }
  const r = await deps.exec(
    'npx',
    [
      'cdklocal',
      'deploy',
      '--no-notices',
      '--require-approval',
      'never',
      '-c',
      'target=localstack',
      '--outputs-file',
      OUTPUTS_FILE,
    ],
    common,
  );
  if (r.code !== 0)
    throw new ConfigError(`cdklocal deploy failed (exit ${r.code}); its output above says why.`);
}

/** The state machine ARN from the deploy's outputs file. */
export function stateMachineArnFromOutputs(cwd: string): string {
  const file = join(cwd, OUTPUTS_FILE);
  if (!existsSync(file)) {
    throw new ConfigError(`${OUTPUTS_FILE} does not exist: deploy first with \`npm run localstack:deploy\`.`);
  }
  const outputs = JSON.parse(readFileSync(file, 'utf8')) as Record<string, Record<string, string>>;
  for (const stack of Object.values(outputs)) {
    for (const [key, value] of Object.entries(stack)) {
      if (/StateMachineArn/i.test(key) && value.startsWith('arn:')) return value;
    }
  }
  throw new ConfigError(
    `${OUTPUTS_FILE} has no StateMachineArn output: redeploy with \`npm run localstack:deploy\`.`,
  );
}

/**
 * Starts an execution for the source and follows it (and the executions it continues into) to the
 * end, with the same progress display as `npm run local`. Resolves to the final status report.
 */
export async function startAndFollow(
  deps: LocalStackDeps,
  opts: { sourceId: string; follow: boolean; pollMs?: number; progress: 'tty' | 'lines' | 'none' },
): Promise<StatusReport | null> {
  const stateMachineArn = stateMachineArnFromOutputs(deps.cwd);
  const target = { stateMachineArn, sourceId: opts.sourceId };
  const started = await startIngestion({ sfn: deps.sfn, now: deps.now }, target);
  deps.out(`started ${started.executionArn}\n`);
  if (!opts.follow) return null;
  return follow(deps, target, opts);
}

export async function follow(
  deps: LocalStackDeps,
  target: { stateMachineArn: string; sourceId: string },
  opts: { pollMs?: number; progress: 'tty' | 'lines' | 'none' },
): Promise<StatusReport> {
  const progress = createProgressReporter({ mode: opts.progress, write: deps.out, lineIntervalMs: 10_000 });
  const t0 = deps.now();
  let firstStored: number | null = null;
  for (;;) {
    const report = await ingestionStatus(
      { sfn: deps.sfn, now: deps.now, readCheckpoint: deps.readCheckpoint },
      target,
    );
    const cp = report.checkpoint;
    const stored = cp?.eventsInserted ?? report.latest?.totals.inserted ?? 0;
    firstStored ??= stored;
    progress.update(
      {
        stored,
        total: cp?.totalReported ?? null,
        pages: cp?.pages ?? report.latest?.totals.pages ?? 0,
        rejected: 0,
        rateLimited: 0,
        elapsedMs: deps.now() - t0,
        storedThisRun: stored - firstStored,
      },
      deps.now(),
    );
    const status = report.execution?.status;
    const ended = status !== undefined && status !== 'RUNNING';
    // A SUCCEEDED execution with an incomplete checkpoint has continued as new: keep following.
    if (cp?.status === 'complete' && ended) {
      progress.done();
      return report;
    }
    if (ended && status !== 'SUCCEEDED') {
      progress.done();
      return report;
    }
    await deps.sleep(opts.pollMs ?? 2000);
  }
}

function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .find((l) => l.trim())
      ?.trim() ?? ''
  );
}

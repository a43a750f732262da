import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  ListExecutionsCommand,
  SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { CheckpointView } from '#ops/progress.ts';
import {
  COMPOSE_FILE,
  DockerUnavailableError,
  deploy,
  down,
  type Exec,
  LOCALSTACK_ENV,
  type LocalStackDeps,
  OUTPUTS_FILE,
  requireDocker,
  startAndFollow,
  stateMachineArnFromOutputs,
  up,
} from '../../../local/localstack/core.ts';

const ROOT = resolve(import.meta.dirname, '../../..');
const ARN = 'arn:aws:states:us-east-1:000000000000:stateMachine:datasync-ingest';
const sfnMock = mockClient(SFNClient);
afterEach(() => sfnMock.reset());

function recordingExec(answers: Record<string, number> = {}) {
  const calls: { line: string; env?: Record<string, string> }[] = [];
  const exec: Exec = async (command, args, opts) => {
    const line = [command, ...args].join(' ');
    calls.push({ line, ...(opts?.env ? { env: opts.env } : {}) });
    const code = Object.entries(answers).find(([prefix]) => line.startsWith(prefix))?.[1] ?? 0;
    return {
      code,
      stdout: '',
      stderr: code ? 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' : '',
    };
  };
  return { exec, calls };
}

function deps(over: Partial<LocalStackDeps>): LocalStackDeps {
  return {
    exec: recordingExec().exec,
    sfn: new SFNClient({ region: 'us-east-1' }),
    readCheckpoint: async () => null,
    out: () => {},
    now: () => Date.now(),
    sleep: async () => {},
    cwd: ROOT,
    ...over,
  };
}

describe('the compose file', () => {
  const text = readFileSync(join(ROOT, COMPOSE_FILE), 'utf8');
  const compose = parse(text) as {
    services: Record<
      string,
      { image: string; environment?: string[]; ports?: string[]; networks?: string[] }
    >;
  };

  // The compose file's own ${VAR:-default} interpolation, checked as written.
  it('pins LocalStack to the last token-free tag and passes the auth token through', () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: compose interpolation syntax, not a JS template
    expect(compose.services.localstack!.image).toBe('${LOCALSTACK_IMAGE:-localstack/localstack:4.14}');
    expect(compose.services.localstack!.environment).toContain(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: compose interpolation syntax, not a JS template
      'LOCALSTACK_AUTH_TOKEN=${LOCALSTACK_AUTH_TOKEN:-}',
    );
  });

  it('puts the Lambda containers on the network where postgres and the simulator resolve', () => {
    expect(compose.services.localstack!.environment).toContain('LAMBDA_DOCKER_NETWORK=datasync');
    for (const s of ['localstack', 'postgres', 'simulator'])
      expect(compose.services[s]!.networks).toContain('datasync');
    expect(compose.services.postgres!.image).toMatch(/^postgres:16/);
    expect(compose.services.simulator!.ports).toContain('127.0.0.1:4010:4010');
  });

  const composeBinary = ['docker-compose', 'docker'].find((bin) => {
    const args = bin === 'docker' ? ['compose', 'version'] : ['version'];
    return spawnSync(bin, args, { stdio: 'ignore' }).status === 0;
  });
  it.runIf(composeBinary)(
    'is accepted by `docker compose config` where a compose client is installed',
    () => {
      const args =
        composeBinary === 'docker'
          ? ['compose', '-f', COMPOSE_FILE, 'config', '-q']
          : ['-f', COMPOSE_FILE, 'config', '-q'];
      expect(() => execFileSync(composeBinary as string, args, { cwd: ROOT, stdio: 'pipe' })).not.toThrow();
    },
  );
});

describe('localstack:up and deploy', () => {
  it('without a Docker engine, up fails with one clear error and runs nothing else', async () => {
    const { exec, calls } = recordingExec({ 'docker info': 1 });
    const err = await up(deps({ exec })).catch((e) => e);
    expect(err).toBeInstanceOf(DockerUnavailableError);
    expect(err.message).toContain('Cannot connect to the Docker daemon');
    expect(err.message).toContain('npm run local');
    expect(calls.map((c) => c.line)).toEqual(['docker info --format {{.ServerVersion}}']);
  });

  it('up uses the Compose v2 plugin when present, else docker-compose', async () => {
    const v2 = recordingExec();
    await up(deps({ exec: v2.exec }));
    expect(v2.calls.at(-1)!.line).toBe(`docker compose -p datasync-localstack -f ${COMPOSE_FILE} up -d`);
    const v1 = recordingExec({ 'docker compose version': 1 });
    await up(deps({ exec: v1.exec }));
    expect(v1.calls.at(-1)!.line).toBe(`docker-compose -p datasync-localstack -f ${COMPOSE_FILE} up -d`);
  });

  it('without a Docker engine, every LocalStack command says Docker (and the auth token) is what is missing', async () => {
    const commands: Record<string, (d: LocalStackDeps) => Promise<unknown>> = {
      up,
      deploy,
      down,
      // start and status check it first in the CLI.
      start: requireDocker,
    };
    for (const [name, run] of Object.entries(commands)) {
      const { exec, calls } = recordingExec({ 'docker info': 1 });
      const err = await run(deps({ exec })).catch((e: unknown) => e);
      expect(err, name).toBeInstanceOf(DockerUnavailableError);
      expect((err as Error).message, name).toMatch(/^No Docker engine is reachable/);
      expect((err as Error).message, name).toContain('LOCALSTACK_AUTH_TOKEN');
      expect((err as Error).message, name).not.toContain('is LocalStack up');
      expect(
        calls.map((c) => c.line),
        name,
      ).toEqual(['docker info --format {{.ServerVersion}}']);
    }
  });

  it('hands cdklocal an environment its own check accepts, S3 endpoint included', async () => {
    // cdklocal 3.x's own function, run on a copy of what deploy passes it.
    const { configureEnvironment } = createRequire(import.meta.url)('aws-cdk-local/src/index.js') as {
      configureEnvironment: (env: Record<string, string>, allow: string) => void;
    };
    const env = { ...LOCALSTACK_ENV };
    expect(() => configureEnvironment(env, '')).not.toThrow();
    expect(env.AWS_ENDPOINT_URL).toBe('http://localhost:4566');
    expect(env.AWS_ENDPOINT_URL_S3).toBe('http://s3.localhost.localstack.cloud:4566');
    expect(env.AWS_REGION).toBe('us-east-1');
    // What cdklocal 3.0.4 threw on with the endpoint alone.
    expect(() => configureEnvironment({ AWS_ENDPOINT_URL: 'http://localhost:4566' }, '')).toThrow(
      /AWS_ENDPOINT_URL_S3/,
    );
  });

  it('deploy bootstraps and deploys the localstack target with cdklocal against the LocalStack endpoint', async () => {
    const { exec, calls } = recordingExec();
    await deploy(deps({ exec }));
    expect(calls.map((c) => c.line)).toEqual([
      'docker info --format {{.ServerVersion}}',
      'npx cdklocal bootstrap --no-notices -c target=localstack',
      `npx cdklocal deploy --no-notices --require-approval never -c target=localstack --outputs-file ${OUTPUTS_FILE}`,
    ]);
    expect(calls[2]!.env).toEqual(LOCALSTACK_ENV);
  });
});

describe('localstack:start', () => {
  it('reads the ARN from the deploy outputs, starts an execution and follows it through continue-as-new to completion', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'dsi-ls-'));
    mkdirSync(join(cwd, '.local'));
    writeFileSync(
      join(cwd, OUTPUTS_FILE),
      JSON.stringify({ DataSyncIngest: { StateMachineArnOutput: ARN } }),
    );
    expect(stateMachineArnFromOutputs(cwd)).toBe(ARN);

    const first = `${ARN.replace('stateMachine', 'execution')}:default-1`;
    const child = `${ARN.replace('stateMachine', 'execution')}:child-2`;
    let phase = 0; // 0: nothing yet; 1: first running; 2: first succeeded (continued), child running; 3: child done
    sfnMock.on(StartExecutionCommand).callsFake(() => {
      phase = 1;
      return { executionArn: first, startDate: new Date() };
    });
    sfnMock.on(ListExecutionsCommand).callsFake((input: { statusFilter?: string }) => {
      const all = [
        ...(phase >= 2 ? [{ executionArn: child, status: phase === 3 ? 'SUCCEEDED' : 'RUNNING' }] : []),
        ...(phase >= 1 ? [{ executionArn: first, status: phase === 1 ? 'RUNNING' : 'SUCCEEDED' }] : []),
      ];
      return { executions: input.statusFilter ? all.filter((e) => e.status === input.statusFilter) : all };
    });
    sfnMock.on(DescribeExecutionCommand).callsFake((input: { executionArn: string }) => ({
      executionArn: input.executionArn,
      input: JSON.stringify({ sourceId: 'default' }),
      status:
        input.executionArn === first
          ? phase === 1
            ? 'RUNNING'
            : 'SUCCEEDED'
          : phase === 3
            ? 'SUCCEEDED'
            : 'RUNNING',
      startDate: new Date(),
    }));
    sfnMock.on(GetExecutionHistoryCommand).resolves({ events: [] });

    const checkpoints: CheckpointView[] = [
      {
        eventsInserted: 5000,
        pages: 1,
        totalReported: 15000,
        status: 'running',
        lastError: null,
        updatedAtMs: 1,
      },
      {
        eventsInserted: 10000,
        pages: 2,
        totalReported: 15000,
        status: 'running',
        lastError: null,
        updatedAtMs: 2,
      },
      {
        eventsInserted: 15000,
        pages: 3,
        totalReported: 15000,
        status: 'complete',
        lastError: null,
        updatedAtMs: 3,
      },
    ];
    let polls = 0;
    const out: string[] = [];
    const report = await startAndFollow(
      deps({
        cwd,
        out: (t) => out.push(t),
        readCheckpoint: async () => {
          const cp = checkpoints[Math.min(polls, 2)]!;
          polls++;
          if (polls === 2) phase = 2; // the first execution continued as new
          if (polls === 3) phase = 3;
          return cp;
        },
        now: (() => {
          let t = 0;
          return () => (t += 11_000);
        })(),
      }),
      { sourceId: 'default', follow: true, progress: 'lines', pollMs: 1 },
    );
    expect(sfnMock.commandCalls(StartExecutionCommand)[0]!.args[0].input).toMatchObject({
      stateMachineArn: ARN,
      input: JSON.stringify({ sourceId: 'default' }),
    });
    expect(report?.checkpoint?.status).toBe('complete');
    expect(report?.execution?.arn).toBe(child);
    expect(out.join('')).toContain('15,000/15,000 events');
  });

  it('without a deploy it says to deploy first', () => {
    const cwd = mkdtempSync(join(tmpdir(), 'dsi-ls-'));
    expect(() => stateMachineArnFromOutputs(cwd)).toThrow(/npm run localstack:deploy/);
  });
});

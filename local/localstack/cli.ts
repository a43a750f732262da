import { spawn } from 'node:child_process';

// The AWS SDK's Node-version notice (9 lines on Node < 22) reads as a broken setup; this project
// supports Node 20. The variable is the one @aws-sdk/core reads.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

import { parseArgs } from 'node:util';
import { SFNClient } from '@aws-sdk/client-sfn';
import { formatStatus } from '#ops/format.ts';
import { ingestionStatus } from '#ops/progress.ts';
import { getCheckpoint } from '#shared/db/checkpoints.ts';
import { createDb, createSql } from '#shared/db/client.ts';
import { DataSyncError } from '#shared/errors.ts';
import {
  deploy,
  down,
  type Exec,
  LOCALSTACK_DATABASE_URL,
  LOCALSTACK_ENDPOINT,
  type LocalStackDeps,
  requireDocker,
  startAndFollow,
  stateMachineArnFromOutputs,
  up,
} from './core.ts';

const USAGE = `Usage: npm run localstack:<up|deploy|start|status|down> [-- options]
  up       start LocalStack, PostgreSQL 16 and the simulator (docker compose)
  deploy   cdklocal bootstrap + deploy of the stack with -c target=localstack
  start    start an execution and follow it to the end (--no-follow to return at once)
  status   the source's execution and checkpoint
  down     stop and remove the containers and volumes
Options: --source S (default "default"), --database-url URL (default ${LOCALSTACK_DATABASE_URL})`;

const exec: Exec = (command, args, opts = {}) =>
  new Promise((resolve) => {
    const child = spawn(command, args, {
      env: { ...process.env, ...opts.env },
      stdio: opts.interactive ? 'inherit' : ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => {
      stdout += d;
    });
    child.stderr?.on('data', (d) => {
      stderr += d;
    });
    child.on('error', (e) => resolve({ code: 127, stdout, stderr: e.message }));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      source: { type: 'string', default: 'default' },
      'database-url': { type: 'string', default: LOCALSTACK_DATABASE_URL },
      'no-follow': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const command = positionals[0];
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!command) {
    console.error(`error: name a command\n${USAGE}`);
    return 2;
  }
  const sql = createSql(values['database-url'] as string, { applicationName: 'datasync-localstack-cli' });
  const deps: LocalStackDeps = {
    exec,
    sfn: new SFNClient({
      endpoint: LOCALSTACK_ENDPOINT,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    }),
    readCheckpoint: (sourceId) => getCheckpoint(createDb(sql), sourceId),
    out: (t) => process.stdout.write(t),
    now: () => Date.now(),
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    cwd: process.cwd(),
  };
  try {
    switch (command) {
      case 'up':
        await up(deps);
        return 0;
      case 'deploy':
        await deploy(deps);
        return 0;
      case 'down':
        await down(deps);
        return 0;
      case 'start': {
        await requireDocker(deps);
        const report = await startAndFollow(deps, {
          sourceId: values.source as string,
          follow: !values['no-follow'],
          progress: process.stdout.isTTY ? 'tty' : 'lines',
        });
        if (report) for (const line of formatStatus(report)) console.log(line);
        return report?.execution && !['SUCCEEDED', 'RUNNING'].includes(report.execution.status) ? 1 : 0;
      }
      case 'status': {
        await requireDocker(deps);
        const report = await ingestionStatus(deps, {
          stateMachineArn: stateMachineArnFromOutputs(deps.cwd),
          sourceId: values.source as string,
        });
        for (const line of formatStatus(report)) console.log(line);
        return 0;
      }
      default:
        console.error(`error: unknown command "${command}"\n${USAGE}`);
        return 2;
    }
  } finally {
    await sql.end({ timeout: 2 });
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const e = error instanceof Error ? error : new Error(String(error));
    console.error(`error: ${e instanceof DataSyncError ? e.message : `${e.name}: ${e.message}`}`);
    process.exit(1);
  },
);

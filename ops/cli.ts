import { SFNClient } from '@aws-sdk/client-sfn';
import { parseIngestArgs, USAGE } from '#ops/args.ts';
import { explainAwsError } from '#ops/aws-errors.ts';
import { startIngestion, stopIngestion } from '#ops/executions.ts';
import { formatStatus } from '#ops/format.ts';
import { type CheckpointView, ingestionStatus } from '#ops/progress.ts';
import { DataSyncError } from '#shared/errors.ts';

/**
 * Opens the database only for `status --database-url`: the rest of the CLI needs AWS alone. The
 * rows become the same view the status function returns (chains, summed counters).
 */
async function checkpointReader(url: string) {
  const { createDb, createSql } = await import('#shared/db/client.ts');
  const { listChains } = await import('#shared/db/chains.ts');
  const { statusView } = await import('#shared/status/view.ts');
  const sql = createSql(url, { applicationName: 'datasync-ingest-cli' });
  return {
    read: async (sourceId: string): Promise<CheckpointView | null> =>
      statusView(await listChains(createDb(sql), sourceId), Date.now()),
    close: () => sql.end({ timeout: 5 }),
  };
}

async function statusFunction(functionName: string, region: string | undefined) {
  const { LambdaClient } = await import('@aws-sdk/client-lambda');
  const { statusFunctionReader } = await import('#ops/status-function.ts');
  const lambda = new LambdaClient(region ? { region } : {});
  return { read: statusFunctionReader(lambda, functionName), close: async () => lambda.destroy() };
}

async function main(argv: string[]): Promise<number> {
  const cmd = parseIngestArgs(argv, process.env);
  if (cmd === 'help') {
    console.log(USAGE);
    return 0;
  }
  const target = { stateMachineArn: cmd.stateMachineArn, sourceId: cmd.sourceId };
  const region = cmd.stateMachineArn.split(':')[3];
  const sfn = new SFNClient(region ? { region } : {});
  const now = () => Date.now();
  if (cmd.command === 'start') {
    const r = await startIngestion({ sfn, now }, target);
    console.log(`started ${r.executionArn}`);
    if (r.parentExecutionId) console.log(`takes over the lease of ${r.parentExecutionId}`);
    return 0;
  }
  if (cmd.command === 'stop') {
    const r = await stopIngestion({ sfn, now }, target, cmd.cause);
    console.log(`stopped ${r.executionArn}`);
    return 0;
  }
  // The status function first: it needs no tunnel to a database in isolated subnets.
  const reader = cmd.statusFunction
    ? await statusFunction(cmd.statusFunction, region)
    : cmd.databaseUrl
      ? await checkpointReader(cmd.databaseUrl)
      : null;
  try {
    const report = await ingestionStatus(
      { sfn, now, ...(reader ? { readCheckpoint: reader.read } : {}) },
      target,
    );
    for (const line of formatStatus(report)) console.log(line);
    return 0;
  } finally {
    await reader?.close();
  }
}

// On Node 20 every AWS SDK client warns, in seven lines on stderr, that SDK releases after
// January 2027 need Node 22. It says nothing about the command run; package.json's devEngines
// carries the hint toward Node 22/24 instead. Set before the first client is made.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    // Our errors carry the cause and the fix (credentials included); anything else (network) keeps its name.
    const explained = explainAwsError(error);
    const e = explained instanceof Error ? explained : new Error(String(explained));
    console.error(e instanceof DataSyncError ? e.message : `${e.name}: ${e.message}`);
    process.exitCode = 1;
  },
);

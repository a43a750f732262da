import { parseArgs } from 'node:util';
import { ConfigError } from '#shared/errors.ts';
import { sourceIdSchema } from '#shared/step/index.ts';

export const USAGE = `Usage: npm run ingest -- <start|status|stop> [options]

  start    start an execution for the source (refused while one is RUNNING)
  status   show the source's running or newest execution and its progress
  stop     stop the source's RUNNING execution

Options:
  --source <id>              source id (default: "default")
  --state-machine-arn <arn>  the state machine (default: env STATE_MACHINE_ARN; the stack output StateMachineArn)
  --status-function <name>   status only: read the checkpoint through the stack's status function, no tunnel
                             needed (default: env STATUS_FUNCTION_NAME; the stack output StatusFunctionName)
  --database-url <url>       status only: read the checkpoint from the database directly (default: env DATABASE_URL)
  --cause <text>             stop only: why (recorded on the execution)
  --help                     show this help`;

export interface IngestCommand {
  command: 'start' | 'status' | 'stop';
  sourceId: string;
  stateMachineArn: string;
  databaseUrl: string | null;
  statusFunction: string | null;
  cause: string;
}

const COMMANDS = ['start', 'status', 'stop'] as const;

/** Parses argv (without node and the script) and env; every mistake is a ConfigError with the fix. */
export function parseIngestArgs(argv: string[], env: NodeJS.ProcessEnv): IngestCommand | 'help' {
  let parsed: ReturnType<
    typeof parseArgs<{
      options: {
        source: { type: 'string' };
        'state-machine-arn': { type: 'string' };
        'database-url': { type: 'string' };
        'status-function': { type: 'string' };
        cause: { type: 'string' };
        help: { type: 'boolean' };
      };
      allowPositionals: true;
      strict: true;
    }>
  >;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        source: { type: 'string' },
        'state-machine-arn': { type: 'string' },
        'database-url': { type: 'string' },
        'status-function': { type: 'string' },
        cause: { type: 'string' },
        help: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new ConfigError(`${error instanceof Error ? error.message : String(error)}\n\n${USAGE}`);
  }
  if (parsed.values.help) return 'help';
  const [command, ...extra] = parsed.positionals;
  if (!command || !(COMMANDS as readonly string[]).includes(command) || extra.length > 0) {
    throw new ConfigError(
      `${command ? `Unknown command "${[command, ...extra].join(' ')}"` : 'No command given'}: use start, status or stop.\n\n${USAGE}`,
    );
  }
  const source = sourceIdSchema.safeParse(parsed.values.source ?? 'default');
  if (!source.success) throw new ConfigError(`--source: ${source.error.issues[0]?.message}`);
  const arn = parsed.values['state-machine-arn'] ?? env.STATE_MACHINE_ARN;
  if (!arn) {
    throw new ConfigError(
      'No state machine ARN: pass --state-machine-arn <arn> or set STATE_MACHINE_ARN (the stack output StateMachineArn: ' +
        'aws cloudformation describe-stacks --stack-name DataSyncIngest --query "Stacks[0].Outputs").',
    );
  }
  if (!/^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]+$/.test(arn)) {
    throw new ConfigError(
      `"${arn}" is not a state machine ARN (arn:aws:states:<region>:<account>:stateMachine:<name>): copy the stack output StateMachineArn.`,
    );
  }
  return {
    command: command as IngestCommand['command'],
    sourceId: source.data,
    stateMachineArn: arn,
    databaseUrl: parsed.values['database-url'] ?? env.DATABASE_URL ?? null,
    statusFunction: parsed.values['status-function'] ?? env.STATUS_FUNCTION_NAME ?? null,
    cause: parsed.values.cause ?? `Stopped with npm run ingest -- stop`,
  };
}

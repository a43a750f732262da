import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { CONTINUE_AS_NEW_STATE, FUNCTION_TASK_STATES } from '#infra/state-machine.ts';
import { listChains } from '#shared/db/chains.ts';
import { createDb } from '#shared/db/client.ts';
import type { StepOutput } from '#shared/step/index.ts';
import { collectOutput } from '../child-process.ts';
import { runExecutions } from '../run/executor.ts';
import { countStored, verificationProblem } from '../run/verification.ts';
import { type RunningSimulator, startSimulator } from '../simulator/index.ts';
import { startTlsDatabase, type TlsDatabase } from './database.ts';
import { type KillPlan, type KillReport, KillSchedule } from './kills.ts';
import { ensureNode24, type Node24 } from './node24.ts';
import { FunctionSandboxes, type FunctionSpec, RUNTIME_FILE } from './sandbox.ts';
import { type LocalSecret, type SecretsServer, startSecretsServer } from './secrets-server.ts';
import {
  type CfnTemplate,
  LocalResolver,
  readStackTemplate,
  resource,
  resourcesOfType,
  stateMachineDefinition,
  TemplateError,
  type TemplateFunction,
  TWIN_REGION,
  templateFunction,
} from './template.ts';
import { type LocalCa, makeLocalCa } from './tls.ts';

/** The repository root: cdk.json, node_modules and the default `.local` live here. */
export const PROJECT_ROOT = resolve(import.meta.dirname, '..', '..');

/** The host name the throwaway PostgreSQL's certificate is issued for (the secret's `host`). */
export const DATABASE_HOST = 'localhost';

/** Lambda's CA bundle (Amazon's CAs, RDS's among them): the template's NODE_EXTRA_CA_CERTS. */
const LAMBDA_CA_BUNDLE = '/var/runtime/ca-cert.pem';
/** Where Lambda unpacks the bundle: the template's paths under it are the asset folder's. */
const TASK_ROOT = '/var/task';

export interface TwinOptions {
  /** Events the simulator serves. */
  events: number;
  /**
   * SIGKILLs of the function process, each once: the sandbox running the `page`-th FetchPage
   * invocation (or the next one, when that invocation ended before the kill was due) is killed
   * `delayMs` after its first request started (`request`) or after that request's answer arrived
   * (`answer`: the page being read, validated or written).
   */
  kills: KillPlan[];
  /** Simulator latency of a 5000-event page (`live`: 3.5 s plus jitter, as the live service). */
  latencyMs: number | 'live';
  /** CDK context the app is synthesized with besides the API URL (pageSize, chains...). */
  context?: Record<string, string>;
  /** Holds the Node 24 tool folder and, by default, the run's files. @default '<repo>/.local' */
  dataDir?: string;
  /** The run's files: the assembly (cdk.out), the CA, the logs. @default '<dataDir>/twin' */
  workDir?: string;
  /** @default '<dataDir>/tools/node24' */
  toolsDir?: string;
  sourceId?: string;
  /** Stops the run after the steps in flight (Ctrl-C); everything the twin started is stopped. */
  signal?: AbortSignal;
  out?: (line: string) => void;
}

export interface TwinSummary {
  status: 'complete' | 'failed' | 'interrupted';
  sourceId: string;
  events: number;
  distinctIds: number;
  expectedEvents: number;
  /** Every expected event stored exactly once, and the checkpoint agrees. */
  exact: boolean;
  problem: string | null;
  node: { binary: string; sandboxes: string[] };
  synthSeconds: number;
  migrate: unknown;
  executions: number;
  /** FetchPage steps that completed, by outcome: `advanced` (stored a page or ended a range), `not-yet-due`, `rate-limited`. */
  steps: Record<string, number>;
  kills: KillReport[];
  sandboxes: { coldStarts: number; invocations: number; lost: number; timeouts: number };
  secretReads: Record<string, number>;
  tls: { server: string; verifiedBy: string };
  seconds: number;
  logDir: string;
  error?: { name: string; message: string };
}

export type { KillPlan, KillReport };

/** `cdk synth` of the app, offline (local esbuild), into `outdir`. */
export async function synthesize(outdir: string, context: Record<string, string>): Promise<number> {
  const started = Date.now();
  rmSync(outdir, { recursive: true, force: true });
  const cdk = join(PROJECT_ROOT, 'node_modules', '.bin', 'cdk');
  const args = ['synth', '--no-notices', '--quiet', '--output', outdir];
  for (const [key, value] of Object.entries(context)) args.push('--context', `${key}=${value}`);
  const child = spawn(cdk, args, {
    cwd: PROJECT_ROOT,
    env: { ...process.env, CDK_DISABLE_VERSION_CHECK: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const r = await collectOutput(child);
  if (r.code !== 0) {
    const said =
      (r.error?.message ?? `${r.stderr}${r.stdout}`.trim().split('\n').slice(-15).join('\n')) || '';
    throw new TemplateError(
      `cdk synth failed (${r.error ? 'could not start node_modules/.bin/cdk: run npm ci' : `exit code ${r.code}`}):\n${said}`,
    );
  }
  return (Date.now() - started) / 1000;
}

/** The single stack of an assembly (the app builds one). */
function onlyStack(outdir: string): string {
  const manifest = JSON.parse(readFileSync(join(outdir, 'manifest.json'), 'utf8')) as {
    artifacts?: Record<string, { type: string }>;
  };
  const stacks = Object.entries(manifest.artifacts ?? {}).filter(
    ([, a]) => a.type === 'aws:cloudformation:stack',
  );
  if (stacks.length !== 1)
    throw new TemplateError(`The assembly in ${outdir} holds ${stacks.length} stacks, not one.`);
  return stacks[0]![0];
}

/** A template value the twin replaces by a local one, and why (printed, so nothing is hidden). */
export interface StandIn {
  function: string;
  variable: string;
  template: string;
  local: string;
  why: string;
}

/**
 * The function's process environment: every variable of its template Environment, references
 * resolved; the paths that exist only in Lambda mapped to their local stand-ins (the bundle's
 * /var/task is its asset folder; the CA files are the local CA); then what Lambda itself sets
 * (region, function name, handler, task root, log format and level, credentials) and the local
 * Secrets Manager endpoint.
 */
export function functionEnvironment(
  fn: TemplateFunction,
  resolver: LocalResolver,
  local: { caFile: string; secretsUrl: string; nodeBinary: string },
): { env: Record<string, string>; standIns: StandIn[] } {
  const env: Record<string, string> = {};
  const standIns: StandIn[] = [];
  for (const [key, raw] of Object.entries(fn.environment)) {
    const value = String(resolver.resolve(raw, `${fn.logicalId}.Environment.Variables.${key}`));
    let local_: string | null = null;
    let why = '';
    if (key === 'DATABASE_CA_FILE') {
      local_ = local.caFile;
      why = 'the local CA stands in for the RDS CA bundle';
    } else if (value === LAMBDA_CA_BUNDLE) {
      local_ = local.caFile;
      why = "Lambda's CA bundle (Amazon's CAs, RDS's among them): the local CA stands in";
    } else if (value === TASK_ROOT || value.startsWith(`${TASK_ROOT}/`)) {
      local_ = join(fn.assetDir, value.slice(TASK_ROOT.length));
      why = 'Lambda unpacks the bundle in /var/task: here it is the asset folder';
    }
    env[key] = local_ ?? value;
    if (local_) standIns.push({ function: fn.logicalId, variable: key, template: value, local: local_, why });
  }
  const lambda: Record<string, string> = {
    AWS_REGION: TWIN_REGION,
    AWS_DEFAULT_REGION: TWIN_REGION,
    AWS_LAMBDA_FUNCTION_NAME: fn.logicalId,
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(fn.memoryMb),
    AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${fn.logicalId}`,
    AWS_LAMBDA_LOG_STREAM_NAME: `twin/${process.pid}`,
    AWS_EXECUTION_ENV: `AWS_Lambda_${fn.runtime}`,
    LAMBDA_TASK_ROOT: fn.assetDir,
    LAMBDA_RUNTIME_DIR: dirname(RUNTIME_FILE),
    _HANDLER: fn.handler,
    TZ: ':UTC',
    LANG: 'en_US.UTF-8',
    PATH: `${dirname(local.nodeBinary)}:/usr/local/bin:/usr/bin:/bin`,
    // No IAM here: the local endpoint does not check signatures, the SDK only needs something to sign with.
    AWS_ACCESS_KEY_ID: 'AKIDTWINLOCAL0000000',
    AWS_SECRET_ACCESS_KEY: 'twin-local-secret-access-key',
    AWS_SESSION_TOKEN: 'twin-local-session-token',
    AWS_ENDPOINT_URL_SECRETS_MANAGER: local.secretsUrl,
    ...(fn.logFormat ? { AWS_LAMBDA_LOG_FORMAT: fn.logFormat } : {}),
    ...(fn.logLevel ? { AWS_LAMBDA_LOG_LEVEL: fn.logLevel } : {}),
  };
  return { env: { ...env, ...lambda }, standIns };
}

/** The database the template deploys: its name, master user and the secrets attached to it. */
export interface TemplateDatabase {
  logicalId: string;
  type: string;
  dbname: string;
  username: string;
  /** The master user's secret (the one the database's master credentials resolve from). */
  secretId: string;
  passwordKey: string;
  /** Every secret attached to the database (the master's and, say, least-privilege roles'). */
  attachedSecretIds: string[];
}

interface GenerateSpec {
  SecretStringTemplate?: unknown;
  GenerateStringKey?: string;
  PasswordLength?: number;
}

function generateSpec(template: CfnTemplate, secretId: string): GenerateSpec {
  return (resource(template, secretId).Properties?.GenerateSecretString ?? {}) as GenerateSpec;
}

/** A SecretStringTemplate's fields, references resolved (a role's template may name the master secret). */
function templateFields(spec: GenerateSpec, resolver: LocalResolver, where: string): Record<string, unknown> {
  if (spec.SecretStringTemplate === undefined) return {};
  return JSON.parse(String(resolver.resolve(spec.SecretStringTemplate, where))) as Record<string, unknown>;
}

export function templateDatabase(template: CfnTemplate): TemplateDatabase {
  const attached = resourcesOfType(template, 'AWS::SecretsManager::SecretTargetAttachment')
    .map((id) => resource(template, id).Properties ?? {})
    .map((p) => ({
      target: (p.TargetId as { Ref?: string } | undefined)?.Ref,
      secretId: (p.SecretId as { Ref?: string } | undefined)?.Ref,
    }))
    .filter(
      (a): a is { target: string; secretId: string } =>
        !!a.target &&
        !!a.secretId &&
        ['AWS::RDS::DBInstance', 'AWS::RDS::DBCluster'].includes(template.Resources[a.target]?.Type ?? ''),
    );
  const targets = [...new Set(attached.map((a) => a.target))];
  if (targets.length !== 1) {
    throw new TemplateError(
      `The template has ${targets.length} RDS databases with attached secrets (AWS::SecretsManager::SecretTargetAttachment); ` +
        'the twin runs the aws target with one (synthesize without -c target=localstack).',
    );
  }
  const logicalId = targets[0] as string;
  const db = resource(template, logicalId);
  const secrets = attached.filter((a) => a.target === logicalId).map((a) => a.secretId);
  // The master's secret is the one the database's own credentials resolve from ({{resolve:secretsmanager:...}}).
  const props = JSON.stringify(db.Properties ?? {});
  const master = secrets.find((id) => props.includes(`{"Ref":"${id}"}`)) ?? (secrets[0] as string);
  const spec = generateSpec(template, master);
  const fields = templateFields(
    spec,
    new LocalResolver(template, 'template'),
    `${master}.GenerateSecretString`,
  );
  const username =
    typeof db.Properties?.MasterUsername === 'string' ? db.Properties.MasterUsername : fields.username;
  return {
    logicalId,
    type: db.Type,
    dbname: (db.Properties?.DBName ?? db.Properties?.DatabaseName ?? 'postgres') as string,
    username: typeof username === 'string' ? username : 'postgres',
    secretId: master,
    passwordKey: spec.GenerateStringKey ?? 'password',
    attachedSecretIds: secrets,
  };
}

/**
 * The secrets the deployment holds. A secret attached to the database is completed as RDS does:
 * its template's fields and generated password (the master's is the throwaway server's), then
 * host, port, engine and the database's identifier, and dbname when its template has none. The
 * API key secret holds the key an operator puts in (its template value is a placeholder); any
 * other secret keeps its template value or is generated as Secrets Manager would.
 */
export function deploymentSecrets(
  template: CfnTemplate,
  resolver: LocalResolver,
  database: TemplateDatabase,
  db: Pick<TlsDatabase, 'host' | 'port' | 'password' | 'dbname' | 'username'>,
  apiKeySecretArns: Set<string>,
  apiKey: string,
): LocalSecret[] {
  return resourcesOfType(template, 'AWS::SecretsManager::Secret').map((id) => {
    const p = resource(template, id).Properties ?? {};
    const arn = resolver.arnOf(id);
    const name = p.Name ? String(resolver.resolve(p.Name, `${id}.Name`)) : id;
    if (database.attachedSecretIds.includes(id)) {
      const spec = generateSpec(template, id);
      const fields = templateFields(spec, resolver, `${id}.GenerateSecretString`);
      const value = {
        ...fields,
        [spec.GenerateStringKey ?? 'password']:
          id === database.secretId ? db.password : randomString(spec.PasswordLength ?? 32),
        engine: 'postgres',
        host: db.host,
        port: db.port,
        dbname: fields.dbname ?? db.dbname,
        [database.type === 'AWS::RDS::DBCluster' ? 'dbClusterIdentifier' : 'dbInstanceIdentifier']:
          database.logicalId.toLowerCase(),
      };
      return { arn, name, value: JSON.stringify(value) };
    }
    if (apiKeySecretArns.has(arn)) return { arn, name, value: apiKey };
    if (typeof p.SecretString === 'string') return { arn, name, value: p.SecretString };
    return { arn, name, value: generatedSecret(p.GenerateSecretString, resolver) };
  });
}

/** Letters and digits only, which no ExcludeCharacters list the stack uses rules out. */
function randomString(length: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return [...randomBytes(length)].map((b) => alphabet[b % alphabet.length]).join('');
}

/**
 * What Secrets Manager stores for a GenerateSecretString: a random string, under
 * GenerateStringKey in the SecretStringTemplate's JSON when there is one.
 */
export function generatedSecret(spec: unknown, resolver: LocalResolver): string {
  const g = (spec ?? {}) as GenerateSpec;
  const random = randomString(g.PasswordLength ?? 32);
  if (g.SecretStringTemplate === undefined) return random;
  return JSON.stringify({
    ...templateFields(g, resolver, 'GenerateSecretString'),
    [g.GenerateStringKey ?? 'password']: random,
  });
}

/** A Task state of the definition, Map iterations included. */
function taskStates(graph: unknown, found: Record<string, Record<string, unknown>> = {}) {
  const states = (graph as { States?: Record<string, Record<string, unknown>> }).States ?? {};
  for (const [name, state] of Object.entries(states)) {
    if (state.Type === 'Task') found[name] = state;
    const inner = state.ItemProcessor ?? state.Iterator;
    if (inner) taskStates(inner, found);
    for (const branch of (state.Branches as unknown[] | undefined) ?? []) taskStates(branch, found);
  }
  return found;
}

/**
 * The function the state machine's Lambda tasks invoke, checked against what the executor runs:
 * the function tasks (Plan, FetchPage) invoke one function by ARN, ContinueAsNew starts an
 * execution, and there is no other Task state.
 */
export function invokedFunction(definition: Record<string, unknown>): string {
  const tasks = taskStates(definition);
  const functions = new Set<string>();
  for (const [name, state] of Object.entries(tasks)) {
    const resourceArn = String(state.Resource);
    if ((FUNCTION_TASK_STATES as readonly string[]).includes(name)) {
      // payloadResponseOnly: the Resource is the function's ARN; otherwise lambda:invoke names it.
      const fn = resourceArn.endsWith(':states:::lambda:invoke')
        ? String((state.Parameters as { FunctionName?: unknown } | undefined)?.FunctionName ?? '')
        : resourceArn;
      const m = /^arn:aws:lambda:[^:]+:[^:]+:function:([^:]+)$/.exec(fn);
      if (!m) {
        throw new TemplateError(
          `The task ${name} does not invoke a function of the template (${resourceArn}, ${fn}).`,
        );
      }
      functions.add(m[1] as string);
    } else if (name === CONTINUE_AS_NEW_STATE) {
      if (!resourceArn.endsWith(':states:::states:startExecution')) {
        throw new TemplateError(`The task ${name} is not a StartExecution (${resourceArn}).`);
      }
    } else {
      throw new TemplateError(
        `The state machine has a Task state ${name} (${resourceArn}) that the local executor has no handler for: ` +
          'add it to local/run/executor.ts and the twin.',
      );
    }
  }
  for (const name of [...FUNCTION_TASK_STATES, CONTINUE_AS_NEW_STATE]) {
    if (!tasks[name]) throw new TemplateError(`The state machine has no Task state ${name}.`);
  }
  if (functions.size !== 1) {
    throw new TemplateError(
      `The function tasks invoke ${functions.size} functions (${[...functions].join(', ')}), not one.`,
    );
  }
  return [...functions][0] as string;
}

/** The functions the template's triggers (Custom::Trigger, run on every deploy) invoke, in template order. */
export function triggerFunctions(template: CfnTemplate, resolver: LocalResolver): string[] {
  return resourcesOfType(template, 'Custom::Trigger').map((id) => {
    const fn = resolver.functionOf(resource(template, id).Properties?.HandlerArn);
    if (!fn) throw new TemplateError(`The trigger ${id} names no function of the template (HandlerArn).`);
    return fn;
  });
}

/** Everything a twin run stands on, started and ready: for runTwin and for tests that probe one part. */
export interface Twin {
  node: Node24;
  simulator: RunningSimulator;
  apiKey: string;
  outdir: string;
  synthSeconds: number;
  stackName: string;
  template: CfnTemplate;
  resolver: LocalResolver;
  ca: LocalCa;
  db: TlsDatabase;
  database: TemplateDatabase;
  secrets: SecretsServer;
  standIns: StandIn[];
  logDir: string;
  /** The function as its template describes it, environment resolved. */
  spec(logicalId: string): FunctionSpec;
  /** The function's sandboxes (one pool per function, closed with the twin). */
  sandboxes(logicalId: string): FunctionSandboxes;
  close(): Promise<void>;
}

export async function openTwin(opts: TwinOptions): Promise<Twin> {
  const out = opts.out ?? (() => {});
  const dataDir = resolve(opts.dataDir ?? join(PROJECT_ROOT, '.local'));
  const runDir = resolve(opts.workDir ?? join(dataDir, 'twin'));
  const outdir = join(runDir, 'cdk.out');
  const logDir = join(runDir, 'logs');
  rmSync(logDir, { recursive: true, force: true });
  mkdirSync(logDir, { recursive: true });
  const closers: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  };
  try {
    const node = await ensureNode24({
      toolsDir: opts.toolsDir ?? join(dataDir, 'tools', 'node24'),
      log: out,
    });
    out(`node: ${node.version} (${node.path})${node.installed ? ', installed now' : ''}`);

    const apiKey = `sk-twin-${randomBytes(12).toString('hex')}`;
    const simulator = await startSimulator({
      port: 0,
      events: opts.events,
      apiKey,
      latencyMs: opts.latencyMs,
    });
    closers.push(() => simulator.close());
    out(`simulator: ${simulator.url} (${opts.events.toLocaleString('en-US')} events)`);

    const context = { datasyncApiUrl: simulator.url, ...(opts.context ?? {}) };
    out(
      `synth: cdk synth --output ${outdir} ${Object.entries(context)
        .map(([k, v]) => `-c ${k}=${v}`)
        .join(' ')}`,
    );
    const synthSeconds = await synthesize(outdir, context);
    const stackName = onlyStack(outdir);
    const template = readStackTemplate(outdir, stackName);
    out(
      `synth: ${stackName}, ${Object.keys(template.Resources).length} resources, ${synthSeconds.toFixed(1)} s`,
    );

    const database = templateDatabase(template);
    const ca = makeLocalCa(join(runDir, 'tls'), DATABASE_HOST);
    out(`tls: local CA ${ca.caFile}; ${ca.describe}`);
    const db = await startTlsDatabase({ ca, dbname: database.dbname, username: database.username });
    closers.push(() => db.stop());
    out(`database: throwaway PostgreSQL on ${db.host}:${db.port}, TLS only (hostssl), database ${db.dbname}`);

    const resolver = new LocalResolver(template, stackName, {
      [database.logicalId]: { 'Endpoint.Address': db.host, 'Endpoint.Port': String(db.port) },
    });
    const functionIds = resourcesOfType(template, 'AWS::Lambda::Function');
    const apiKeySecretArns = new Set<string>();
    for (const id of functionIds) {
      const vars = (resource(template, id).Properties?.Environment as { Variables?: Record<string, unknown> })
        ?.Variables;
      const v = vars?.DATASYNC_API_KEY_SECRET_ARN;
      if (v !== undefined) apiKeySecretArns.add(String(resolver.resolve(v)));
    }
    const secretList = deploymentSecrets(template, resolver, database, db, apiKeySecretArns, apiKey);
    const secrets = await startSecretsServer(secretList);
    closers.push(() => secrets.close());
    out(`secrets manager: ${secrets.url} (${secretList.map((s) => s.name).join(', ')})`);

    const standIns: StandIn[] = [];
    const specs = new Map<string, FunctionSpec>();
    const spec = (logicalId: string): FunctionSpec => {
      const known = specs.get(logicalId);
      if (known) return known;
      const fn = templateFunction(template, outdir, logicalId);
      if (fn.runtime !== 'nodejs24.x') {
        throw new TemplateError(
          `${logicalId} deploys on ${fn.runtime}; the twin runs nodejs24.x functions on Node 24.`,
        );
      }
      const { env, standIns: s } = functionEnvironment(fn, resolver, {
        caFile: ca.caFile,
        secretsUrl: secrets.url,
        nodeBinary: node.path,
      });
      standIns.push(...s);
      const made: FunctionSpec = {
        logicalId,
        arn: resolver.arnOf(logicalId),
        assetDir: fn.assetDir,
        handler: fn.handler,
        timeoutSeconds: fn.timeoutSeconds,
        memoryMb: fn.memoryMb,
        env,
      };
      specs.set(logicalId, made);
      return made;
    };
    const pools = new Map<string, FunctionSandboxes>();
    closers.push(async () => {
      await Promise.all([...pools.values()].map((p) => p.close()));
    });
    const sandboxes = (logicalId: string) => {
      let pool = pools.get(logicalId);
      if (!pool) {
        const file = join(logDir, `${logicalId}.log`);
        writeFileSync(file, '');
        pool = new FunctionSandboxes(spec(logicalId), node.path, (id, chunk) =>
          appendFileSync(file, chunk.replace(/^(?=.)/gm, `[sandbox ${id}] `)),
        );
        pools.set(logicalId, pool);
      }
      return pool;
    };
    return {
      node,
      simulator,
      apiKey,
      outdir,
      synthSeconds,
      stackName,
      template,
      resolver,
      ca,
      db,
      database,
      secrets,
      standIns,
      logDir,
      spec,
      sandboxes,
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

/**
 * `npm run twin`: the deployed bytes, end to end on this machine. Synthesizes the app, runs the
 * template's migration trigger and then the template's state machine (aws-local-stepfunctions),
 * every task invoking the bundled function from cdk.out in a Node 24 sandbox with the template's
 * environment; secrets from a local Secrets Manager; TLS verified against a local CA; then counts
 * what is stored against what the simulator holds. With `kills`, function processes are SIGKILLed mid-page
 * and the run must still end exact.
 */
export async function runTwin(opts: TwinOptions): Promise<TwinSummary> {
  const started = Date.now();
  const twin = await openTwin(opts);
  try {
    return await ingestOnTwin(twin, opts, started);
  } finally {
    await twin.close();
  }
}

/** The deploy's migration trigger, then the state machine to the end, then the count: on an open twin. */
export async function ingestOnTwin(
  twin: Twin,
  opts: Pick<TwinOptions, 'kills' | 'sourceId' | 'out' | 'signal'>,
  started = Date.now(),
): Promise<TwinSummary> {
  const out = opts.out ?? (() => {});
  const sourceId = opts.sourceId ?? 'default';
  const triggered = triggerFunctions(twin.template, twin.resolver);
  const { definition, logicalId: smId } = stateMachineDefinition(twin.template, twin.resolver);
  const fnId = invokedFunction(definition);
  const fetchPage = twin.sandboxes(fnId);
  for (const id of triggered) twin.spec(id);
  // Once per variable and value, with the functions it applies to.
  const shown = new Map<string, StandIn[]>();
  for (const s of twin.standIns) {
    const key = `${s.variable}\0${s.template}`;
    shown.set(key, [...(shown.get(key) ?? []), s]);
  }
  for (const [, list] of shown) {
    const s = list[0] as StandIn;
    out(
      `env: ${s.variable}=${s.template} -> ${s.local} (${s.why}; ${list.map((l) => l.function).join(', ')})`,
    );
  }
  let migrate: unknown = null;
  for (const id of triggered) {
    // What the trigger's provider does on deploy: a RequestResponse invoke with no payload.
    migrate = await twin.sandboxes(id).invoke({});
    out(`trigger: ${id} (the migration, run on deploy) returned ${JSON.stringify(migrate)}`);
  }
  out(`state machine: ${smId}, its tasks invoke ${fnId} (${fetchPage.spec.assetDir})`);

  const schedule = new KillSchedule(opts.kills, (k) =>
    out(
      `kill: SIGKILL to the function process of FetchPage invocation ${k.invocation}, ${k.delayMs} ms after its ` +
        `${k.anchor === 'request' ? 'request started' : "request's answer arrived"} ` +
        `(${k.answerArrived ? 'answer received: the page being read, validated or written' : 'the request in flight'})`,
    ),
  );
  const handler = async (payload: unknown) => {
    const isPage = (payload as { action?: unknown } | null)?.action !== 'plan';
    const kill = isPage ? schedule.forInvocation() : null;
    try {
      const value = (await fetchPage.invoke(payload, kill?.events)) as never;
      kill?.settle(null);
      return value;
    } catch (error) {
      if (kill?.settle(error as Error)) {
        out(
          `kill: the task failed with ${(error as Error).name}; the state machine's Retry runs the page again`,
        );
      }
      throw error;
    }
  };
  const steps: Record<string, number> = {};
  const result = await runExecutions({
    definition,
    handler,
    input: { sourceId },
    ...(opts.signal ? { signal: opts.signal } : {}),
    timeScale: 1,
    // The sandboxes enforce the template's timeout themselves (and kill the process, as Lambda
    // does); the executor's own bound is a backstop behind it.
    functionTimeoutMs: fetchPage.spec.timeoutSeconds * 1000 + 10_000,
    onPlan: (p) => out(`plan: ${p.done ? 'done' : `${p.chains.length} chain(s), round ${p.round}`}`),
    onStep: (s: StepOutput) => {
      const kind = s.skipped ?? 'advanced';
      steps[kind] = (steps[kind] ?? 0) + 1;
      if (s.page.received > 0) {
        out(
          `page: chain ${s.chain} +${s.page.inserted} (${s.page.duplicates} duplicates), chain total ${s.totals.inserted}${s.done ? ', chain done' : ''}`,
        );
      }
    },
  });

  const sql = twin.db.connect();
  let counts: Awaited<ReturnType<typeof countStored>>;
  let rows: Awaited<ReturnType<typeof listChains>>;
  try {
    counts = await countStored(sql, sourceId);
    rows = await listChains(createDb(sql), sourceId);
  } finally {
    await sql.end({ timeout: 5 });
  }
  const expected = twin.simulator.dataset.expectedValidCount();
  const complete = !result.failure && rows.some((r) => r.sourceId === sourceId && r.status === 'complete');
  const problem = complete ? verificationProblem(counts, rows, expected) : 'the source is not complete';
  const exact =
    complete && problem === null && counts.events === expected && counts.distinctIds === counts.events;
  const secretReads: Record<string, number> = {};
  for (const [id, n] of twin.secrets.reads) secretReads[id] = n;
  const summary: TwinSummary = {
    status: result.interrupted ? 'interrupted' : exact ? 'complete' : 'failed',
    sourceId,
    events: counts.events,
    distinctIds: counts.distinctIds,
    expectedEvents: expected,
    exact,
    problem,
    node: {
      binary: twin.node.version,
      sandboxes: [
        ...new Set(
          [fetchPage, ...triggered.map((id) => twin.sandboxes(id))].flatMap((p) => [...p.nodeVersions]),
        ),
      ],
    },
    synthSeconds: twin.synthSeconds,
    migrate,
    executions: result.executions,
    steps,
    kills: schedule.done,
    sandboxes: { ...fetchPage.stats },
    secretReads,
    tls: { server: twin.ca.describe, verifiedBy: twin.ca.caFile },
    seconds: (Date.now() - started) / 1000,
    logDir: twin.logDir,
    ...(result.failure ? { error: result.failure } : {}),
  };
  return summary;
}

import { pathToFileURL } from 'node:url';
import { App, RemovalPolicy, Tags, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ConfigError } from '#shared/errors.ts';
import { type AppContext, CONTEXT_KEYS, parseContext } from './config.ts';
import { IngestionStack, type IngestionStackProps } from './ingestion-stack.ts';

/** Maps validated context to stack props; unset keys keep the constructs' documented defaults. */
export function stackPropsFromContext(ctx: AppContext): IngestionStackProps {
  const lean = ctx.profile === 'lean';
  const removal = {
    snapshot: RemovalPolicy.SNAPSHOT,
    retain: RemovalPolicy.RETAIN,
    destroy: RemovalPolicy.DESTROY,
  };
  return {
    target: ctx.target,
    // A destroy builds the app only to find the stack: the URL the stack was deployed with is not needed.
    datasyncApiUrl: ctx.datasyncApiUrl ?? (ctx.destroy ? 'https://destroy.invalid/api/v1' : undefined),
    stateMachineName: ctx.stateMachineName,
    apiKeySecret: ctx.apiKeySecretArn
      ? { arn: ctx.apiKeySecretArn }
      : ctx.apiKeySecretName
        ? { name: ctx.apiKeySecretName }
        : undefined,
    apiKeySecretKmsKeyArn: ctx.apiKeySecretKmsKeyArn,
    alarmTopicArn: ctx.alarmTopicArn,
    alarmEmail: ctx.alarmEmail,
    egress: ctx.egress ?? (lean ? 'ipv6' : undefined),
    natGateways: ctx.natGateways,
    secretsManagerEndpoint: ctx.secretsManagerEndpoint,
    database: ctx.database,
    dashboard: ctx.dashboard,
    databaseCaBundle: ctx.databaseCaBundle,
    requireAlarmDestination: ctx.requireAlarmDestination && !ctx.destroy,
    databaseInstanceType: ctx.databaseInstanceType
      ? new ec2.InstanceType(ctx.databaseInstanceType)
      : undefined,
    deletionProtection: ctx.deletionProtection,
    databaseRemovalPolicy: ctx.databaseRemovalPolicy ? removal[ctx.databaseRemovalPolicy] : undefined,
    maxIterationsPerExecution: ctx.maxIterationsPerExecution,
    chains: ctx.chains,
    minRequestSpacingMs: ctx.minRequestSpacingMs,
    pageSize: ctx.pageSize,
    reservedConcurrency: ctx.reservedConcurrency,
  };
}

/**
 * Builds the CDK app: one IngestionStack, cdk-nag AwsSolutions checks on (findings fail synth).
 * `overrides` lets tests point at fixture folders; the CLI path passes none.
 */
export function buildApp(
  app: App = new App(),
  overrides: Partial<IngestionStackProps> = {},
): { app: App; stack: IngestionStack } {
  const raw = Object.fromEntries(CONTEXT_KEYS.map((key) => [key, app.node.tryGetContext(key)]));
  const ctx = parseContext(raw);
  applyProfile(app, ctx);
  const stack = new IngestionStack(app, ctx.stackName, {
    ...stackPropsFromContext(ctx),
    description: `datasync-ingest (${ctx.target}): DataSync API -> PostgreSQL via Step Functions and Lambda`,
    ...overrides,
  });
  Tags.of(stack).add('project', 'datasync-ingest');
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}

/**
 * The lean profile spends nothing while idle: no scheduled top-ups either (each wakes the paused
 * database for about 6 minutes), unless `-c schedule=...` asks for them.
 */
export function applyProfile(app: App, ctx: AppContext): void {
  if (ctx.profile === 'lean' && app.node.tryGetContext('schedule') === undefined) {
    app.node.setContext('schedule', 'none');
  }
}

/** What a destroy leaves behind, said before CloudFormation deletes anything. */
export function destroyNotice(ctx: AppContext): string {
  const policy = ctx.databaseRemovalPolicy ?? 'snapshot';
  const kept =
    policy === 'destroy'
      ? 'nothing of the database (databaseRemovalPolicy=destroy)'
      : policy === 'retain'
        ? 'the database itself and its master secret (databaseRemovalPolicy=retain)'
        : "a final snapshot of the database and its master secret, which the snapshot's password is in (databaseRemovalPolicy=snapshot)";
  return `${ctx.stackName}: destroy keeps ${kept}; everything else goes, logs included. That is this command's context: the stack's OnDestroy output says what the deployed stack keeps.`;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // A configuration mistake is one line naming the fix, not a stack trace.
  try {
    const { app } = buildApp();
    const ctx = parseContext(
      Object.fromEntries(CONTEXT_KEYS.map((key) => [key, app.node.tryGetContext(key)])),
    );
    if (ctx.destroy) process.stderr.write(`${destroyNotice(ctx)}\n`);
    app.synth();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`error: ${error.message}\n`);
    process.exit(1);
  }
}

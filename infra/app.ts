import { pathToFileURL } from 'node:url';
import { App, RemovalPolicy, Tags, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { AwsSolutionsChecks } from 'cdk-nag';
import { type AppContext, CONTEXT_KEYS, parseContext } from './config.ts';
import { IngestionStack, type IngestionStackProps } from './ingestion-stack.ts';

/** Maps validated context to stack props; unset keys keep the constructs' documented defaults. */
export function stackPropsFromContext(ctx: AppContext): IngestionStackProps {
  const removal = {
    snapshot: RemovalPolicy.SNAPSHOT,
    retain: RemovalPolicy.RETAIN,
    destroy: RemovalPolicy.DESTROY,
  };
  return {
    target: ctx.target,
    datasyncApiUrl: ctx.datasyncApiUrl,
    stateMachineName: ctx.stateMachineName,
    apiKeySecret: ctx.apiKeySecretArn
      ? { arn: ctx.apiKeySecretArn }
      : ctx.apiKeySecretName
        ? { name: ctx.apiKeySecretName }
        : undefined,
    apiKeySecretKmsKeyArn: ctx.apiKeySecretKmsKeyArn,
    alarmTopicArn: ctx.alarmTopicArn,
    alarmEmail: ctx.alarmEmail,
    natGateways: ctx.natGateways,
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
  const stack = new IngestionStack(app, ctx.stackName, {
    ...stackPropsFromContext(ctx),
    description: `datasync-ingest (${ctx.target}): DataSync API -> PostgreSQL via Step Functions and Lambda`,
    ...overrides,
  });
  Tags.of(stack).add('project', 'datasync-ingest');
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  buildApp().app.synth();
}

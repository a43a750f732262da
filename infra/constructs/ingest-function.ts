import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/** Props of {@link IngestFunction}. */
export interface IngestFunctionProps {
  /** Absolute path of the TypeScript entry file (exports `handler`). */
  readonly entry: string;
  /** Absolute path of the repository root (holds package.json and package-lock.json). */
  readonly projectRoot: string;
  /** Shown in the console. @default - none */
  readonly description?: string;
  /** @default 512 */
  readonly memorySize?: number;
  /** @default Duration.seconds(60) */
  readonly timeout?: Duration;
  /** Plain, non-secret configuration only: secrets are passed by ARN. @default {} */
  readonly environment?: Record<string, string>;
  /** Powertools service name, also the `service` metric dimension. */
  readonly serviceName: string;
  /** Powertools metrics namespace. @default 'DataSyncIngest' */
  readonly metricsNamespace?: string;
  /** @default 'INFO' */
  readonly logLevel?: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
  /** Retention of the function's own log group. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /** @default - not in a VPC */
  readonly vpc?: ec2.IVpc;
  /** @default - the VPC's private subnets with egress */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /** @default - a new security group when `vpc` is set */
  readonly securityGroups?: ec2.ISecurityGroup[];
  /** Lets the function use the IPv6 addresses of dual-stack subnets (the `ipv6` egress). @default false */
  readonly ipv6AllowedForDualStack?: boolean;
  /** @default - unreserved */
  readonly reservedConcurrentExecutions?: number;
  /** Shell commands run after esbuild (e.g. copying migration files into the bundle). @default - none */
  readonly afterBundling?: (inputDir: string, outputDir: string) => string[];
}

/**
 * One place for the Lambda defaults every function of this project shares (after Powertools'
 * `FunctionWithLogGroup`): Node.js 24 on ARM64, an explicit log group with retention (so logs do not
 * live forever in an implicit group), X-Ray tracing, source maps, and an ESM bundle made by the
 * LOCAL esbuild (synth must work without Docker).
 */
export class IngestFunction extends Construct {
  readonly function: nodejs.NodejsFunction;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: IngestFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const afterBundling = props.afterBundling;
    this.function = new nodejs.NodejsFunction(this, 'Function', {
      entry: props.entry,
      projectRoot: props.projectRoot,
      depsLockFilePath: `${props.projectRoot}/package-lock.json`,
      handler: 'handler',
      description: props.description,
      runtime: lambda.Runtime.NODEJS_24_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySize ?? 512,
      timeout: props.timeout ?? Duration.seconds(60),
      tracing: lambda.Tracing.ACTIVE,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      // With the JSON format, Lambda filters by this level and Powertools follows it, not LOG_LEVEL.
      applicationLogLevelV2: lambda.ApplicationLogLevel[props.logLevel ?? 'INFO'],
      reservedConcurrentExecutions: props.reservedConcurrentExecutions,
      vpc: props.vpc,
      vpcSubnets: props.vpc ? props.vpcSubnets : undefined,
      securityGroups: props.securityGroups,
      ...(props.ipv6AllowedForDualStack ? { ipv6AllowedForDualStack: true } : {}),
      environment: {
        NODE_OPTIONS: '--enable-source-maps',
        POWERTOOLS_SERVICE_NAME: props.serviceName,
        POWERTOOLS_METRICS_NAMESPACE: props.metricsNamespace ?? 'DataSyncIngest',
        LOG_LEVEL: props.logLevel ?? 'INFO',
        ...props.environment,
      },
      bundling: {
        forceDockerBundling: false,
        format: nodejs.OutputFormat.ESM,
        // ESM bundles of CommonJS dependencies call require(): give them one.
        banner:
          "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
        mainFields: ['module', 'main'],
        sourceMap: true,
        sourcesContent: false,
        minify: true,
        // The Node.js 24 runtime ships AWS SDK v3; bundling it would only grow cold starts.
        externalModules: ['@aws-sdk/*'],
        commandHooks: {
          // The bundle takes postgres.js from node_modules as installed: refuse to ship it without
          // the guard scripts/patch-postgres.mjs adds (`npm ci --ignore-scripts` skips it).
          beforeBundling: (inputDir) => [`node "${inputDir}/scripts/patch-postgres.mjs" --check`],
          beforeInstall: () => [],
          afterBundling: afterBundling ?? (() => []),
        },
      },
    });
  }
}

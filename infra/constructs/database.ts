import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as rds from 'aws-cdk-lib/aws-rds';
import { Construct } from 'constructs';

/** Props of {@link Database}. */
export interface DatabaseProps {
  readonly vpc: ec2.IVpc;
  /** @default the VPC's isolated subnets */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /** @default ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MICRO) */
  readonly instanceType?: ec2.InstanceType;
  /** Initial storage in GiB; 3M events with indexes take about 2 GiB. @default 20 */
  readonly allocatedStorageGiB?: number;
  /** Storage autoscaling ceiling in GiB. @default 100 */
  readonly maxAllocatedStorageGiB?: number;
  /** @default false */
  readonly multiAz?: boolean;
  /** Days of automated backups. @default 7 */
  readonly backupRetentionDays?: number;
  /** @default true */
  readonly deletionProtection?: boolean;
  /** What `cdk destroy` does with the instance. @default RemovalPolicy.SNAPSHOT */
  readonly removalPolicy?: RemovalPolicy;
  /** @default 'datasync' */
  readonly databaseName?: string;
}

/**
 * PostgreSQL 16 on RDS: encrypted, private (isolated subnets, no public address), TLS forced by
 * the parameter group, credentials generated into Secrets Manager. Its security group admits
 * nothing until {@link Database.allowFrom} names a client.
 */
export class Database extends Construct {
  readonly instance: rds.DatabaseInstance;
  readonly securityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: DatabaseProps) {
    super(scope, id);
    const engine = rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_16 });
    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'PostgreSQL: only the ingestion functions may connect',
      allowAllOutbound: false,
    });
    const parameterGroup = new rds.ParameterGroup(this, 'Parameters', {
      engine,
      description: 'datasync-ingest: TLS required for every connection',
      parameters: { 'rds.force_ssl': '1' },
    });
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.SNAPSHOT;
    this.instance = new rds.DatabaseInstance(this, 'Instance', {
      engine,
      instanceType: props.instanceType ?? ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.MICRO),
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets ?? { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      securityGroups: [this.securityGroup],
      publiclyAccessible: false,
      storageEncrypted: true,
      storageType: rds.StorageType.GP3,
      allocatedStorage: props.allocatedStorageGiB ?? 20,
      maxAllocatedStorage: props.maxAllocatedStorageGiB ?? 100,
      multiAz: props.multiAz ?? false,
      credentials: rds.Credentials.fromGeneratedSecret('postgres'),
      databaseName: props.databaseName ?? 'datasync',
      parameterGroup,
      backupRetention: Duration.days(props.backupRetentionDays ?? 7),
      deletionProtection: props.deletionProtection ?? true,
      removalPolicy,
      copyTagsToSnapshot: true,
      autoMinorVersionUpgrade: true,
      cloudwatchLogsExports: ['postgresql'],
    });
    Validations.of(this.instance).acknowledge({
      id: 'AwsSolutions-RDS11',
      reason:
        'The default port is acceptable: the instance is in isolated subnets and its security group admits only the ingestion functions.',
    });
    if (!(props.multiAz ?? false)) {
      Validations.of(this.instance).acknowledge({
        id: 'AwsSolutions-RDS3',
        reason:
          'Single-AZ by choice (multiAz prop): a batch ingestion that resumes from its checkpoint tolerates an outage without failover; set multiAz for production SLAs.',
      });
    }
    Validations.of(this.instance.node.findChild('Secret')).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'The generated credentials are not rotated automatically: running functions cache the password for their lifetime; rotate by hand between runs (docs/deploy.md).',
    });
  }

  /** Admits `peer` on the PostgreSQL port: the only ingress rule the database gets. */
  allowFrom(peer: ec2.ISecurityGroup): void {
    this.securityGroup.addIngressRule(peer, ec2.Port.tcp(5432), `PostgreSQL from ${peer.node.id}`);
  }
}

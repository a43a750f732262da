import { join } from 'node:path';
import { App, RemovalPolicy } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { stackPropsFromContext } from '#infra/app.ts';
import { parseContext } from '#infra/config.ts';
import { hashDirectory } from '#infra/constructs/migrations.ts';
import { IngestionStack } from '#infra/ingestion-stack.ts';
import { buildStack, FIXTURE_MIGRATIONS, onlyResource, skipBundlingApp, TEST_API_URL } from './support.ts';

/** Synthesized CloudFormation is untyped JSON; the assertions below state the shape they expect. */
// biome-ignore lint/suspicious/noExplicitAny: template JSON has no static type
type CfnProps = Record<string, any>;

const { template } = buildStack();
const resources = template.toJSON().Resources as Record<string, { Type: string; Properties: CfnProps }>;
const fetchPage = onlyResource(template, 'AWS::Lambda::Function', {
  Description: Match.stringLikeRegexp('page'),
});
const migrate = onlyResource(template, 'AWS::Lambda::Function', {
  Description: Match.stringLikeRegexp('migrations'),
});
const db = onlyResource(template, 'AWS::RDS::DBCluster');
const apiKeySecret = onlyResource(template, 'AWS::SecretsManager::Secret', {
  Name: 'DataSyncIngest/datasync-api-key',
});
/** The attachment (the secret with host and port) of the master, writer or reader secret. */
function attachment(owner: 'Cluster' | 'WriterSecret' | 'ReaderSecret') {
  const ids = Object.keys(template.findResources('AWS::SecretsManager::SecretTargetAttachment')).filter(
    (id) => id.startsWith(`Database${owner}`),
  );
  if (ids.length !== 1) throw new Error(`expected one attachment of ${owner}, found ${ids.length}`);
  return { logicalId: ids[0]! };
}
const dbSecretAttachment = attachment('Cluster');
const writerSecret = attachment('WriterSecret');
const readerSecret = attachment('ReaderSecret');

/** The functions' security group (all three share it). */
const functionsSg = (
  (fetchPage.resource.Properties as CfnProps).VpcConfig.SecurityGroupIds as { 'Fn::GetAtt': [string] }[]
)[0]!['Fn::GetAtt'][0];

function policyOf(role: unknown) {
  const [policy] = Object.values(resources).filter(
    (r) => r.Type === 'AWS::IAM::Policy' && JSON.stringify(r.Properties.Roles) === JSON.stringify([role]),
  );
  if (!policy) throw new Error(`no policy for ${JSON.stringify(role)}`);
  return policy.Properties.PolicyDocument.Statement as { Action: string | string[]; Resource: unknown }[];
}
const roleRef = (fn: { resource: { Properties: CfnProps } }) => ({
  Ref: fn.resource.Properties.Role['Fn::GetAtt'][0],
});

describe('fetch-page function', () => {
  const props = fetchPage.resource.Properties as CfnProps;

  it('has Lambda filter its JSON logs at the application log level Powertools then follows', () => {
    expect(props.LoggingConfig).toMatchObject({ LogFormat: 'JSON', ApplicationLogLevel: 'INFO' });
  });

  it('runs Node.js 24 on ARM64 with tracing, source maps and its own log group', () => {
    expect(props.Runtime).toBe('nodejs24.x');
    expect(props.Architectures).toEqual(['arm64']);
    expect(props.TracingConfig).toEqual({ Mode: 'Active' });
    expect(props.MemorySize).toBe(512);
    expect(props.Timeout).toBe(60);
    expect(props.Environment.Variables.NODE_OPTIONS).toBe('--enable-source-maps');
    const logGroupId = props.LoggingConfig.LogGroup.Ref as string;
    expect(resources[logGroupId]).toMatchObject({
      Type: 'AWS::Logs::LogGroup',
      Properties: { RetentionInDays: 30 },
    });
  });

  it('reserves no concurrency by default (a reservation fails the deploy on a small account quota)', () => {
    expect(props).not.toHaveProperty('ReservedConcurrentExecutions');
  });

  it('runs in the private subnets with egress, never in the public or isolated ones', () => {
    const subnets = (props.VpcConfig.SubnetIds as { Ref: string }[]).map((s) => s.Ref);
    expect(subnets).toHaveLength(2);
    for (const subnet of subnets) expect(subnet).toMatch(/^NetworkVpclambdaSubnet/);
  });

  it('gets configuration and secret ARNs in its environment, never secret values', () => {
    expect(props.Environment.Variables).toEqual({
      NODE_OPTIONS: '--enable-source-maps',
      POWERTOOLS_SERVICE_NAME: 'fetch-page',
      POWERTOOLS_METRICS_NAMESPACE: 'DataSyncIngest',
      LOG_LEVEL: 'INFO',
      DATASYNC_API_URL: TEST_API_URL,
      DATASYNC_API_KEY_SECRET_ARN: { Ref: apiKeySecret.logicalId },
      DATABASE_SECRET_ARN: { Ref: writerSecret.logicalId },
      MIN_REQUEST_SPACING_MS: '2200',
      PAGE_SIZE: '5000',
      CHAINS: 'auto',
      MAX_ITERATIONS_PER_EXECUTION: '1000',
      // Set by the top-up schedule (infra/constructs/schedule.ts).
      TOPUP_LOOKBACK_MS: '900000',
      DATABASE_CA_FILE: '/var/task/rds-ca.pem',
      DATABASE_SSL: 'verify-full',
    });
    expect(JSON.stringify(props.Environment)).not.toMatch(/password|REPLACE_ME|DATASYNC_API_KEY"/i);
  });

  it('may read exactly its two secrets (the API key, the writer role) and nothing else', () => {
    const statements = policyOf(roleRef(fetchPage));
    const secretStatements = statements.filter((s) =>
      [s.Action].flat().some((a) => a.startsWith('secretsmanager:')),
    );
    expect(secretStatements.map((s) => s.Resource)).toEqual([
      { Ref: apiKeySecret.logicalId },
      { Ref: writerSecret.logicalId },
    ]);
    for (const s of secretStatements) {
      expect([s.Action].flat().sort()).toEqual([
        'secretsmanager:DescribeSecret',
        'secretsmanager:GetSecretValue',
      ]);
    }
    const others = statements.filter((s) => !secretStatements.includes(s));
    expect(others.flatMap((s) => [s.Action].flat()).sort()).toEqual([
      'xray:PutTelemetryRecords',
      'xray:PutTraceSegments',
    ]);
  });
});

describe('migrations', () => {
  const props = migrate.resource.Properties as CfnProps;

  it('run as the master user, the only function that may read its secret, and set the role passwords', () => {
    expect(props.Environment.Variables).toMatchObject({
      DATABASE_SECRET_ARN: { Ref: dbSecretAttachment.logicalId },
      DATABASE_WRITER_SECRET_ARN: { Ref: writerSecret.logicalId },
      DATABASE_READER_SECRET_ARN: { Ref: readerSecret.logicalId },
      MIGRATIONS_DIR: '/var/task/drizzle',
      MIGRATIONS_HASH: hashDirectory(FIXTURE_MIGRATIONS),
    });
    const secretResources = policyOf(roleRef(migrate))
      .filter((s) => [s.Action].flat().some((a) => a.startsWith('secretsmanager:')))
      .map((s) => s.Resource);
    expect(secretResources).toEqual([
      { Ref: dbSecretAttachment.logicalId },
      { Ref: writerSecret.logicalId },
      { Ref: readerSecret.logicalId },
    ]);
    // Nobody else holds the master secret.
    const readers = Object.values(resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy')
      .filter((r) => JSON.stringify(r.Properties).includes(`"${dbSecretAttachment.logicalId}"`));
    expect(readers.map((r) => r.Properties.Roles)).toEqual([[roleRef(migrate)]]);
  });

  it('run on deploy whenever the function version changes, after the database and before the state machine', () => {
    const trigger = onlyResource(template, 'Custom::Trigger');
    const versionId = trigger.resource.Properties.HandlerArn as { Ref: string };
    expect(resources[versionId.Ref]).toMatchObject({
      Type: 'AWS::Lambda::Version',
      Properties: { FunctionName: { Ref: migrate.logicalId } },
    });
    expect(trigger.resource.Properties.ExecuteOnHandlerChange).toBe(true);
    const all = template.toJSON().Resources as Record<string, { DependsOn?: string[] }>;
    expect(all[trigger.logicalId]!.DependsOn).toEqual(expect.arrayContaining([db.logicalId]));
    const sm = onlyResource(template, 'AWS::StepFunctions::StateMachine');
    expect(all[sm.logicalId]!.DependsOn).toEqual(expect.arrayContaining([trigger.logicalId]));
  });

  it('run before the fetch-page function is created or updated (new code never meets an old schema)', () => {
    const trigger = onlyResource(template, 'Custom::Trigger');
    const all = template.toJSON().Resources as Record<string, { DependsOn?: string[] }>;
    expect(all[fetchPage.logicalId]!.DependsOn).toEqual(expect.arrayContaining([trigger.logicalId]));
  });

  it('hash changes exactly when a migration changes', () => {
    const h = hashDirectory(FIXTURE_MIGRATIONS);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(hashDirectory(FIXTURE_MIGRATIONS)).toBe(h);
    expect(() => hashDirectory(`${FIXTURE_MIGRATIONS}/missing`)).toThrow(
      /does not exist: generate the drizzle migrations/,
    );
  });
});

describe('status function', () => {
  const status = onlyResource(template, 'AWS::Lambda::Function', {
    Description: Match.stringLikeRegexp('operator CLI'),
  });
  const props = status.resource.Properties as CfnProps;

  it('runs in the function subnets, reads only the reader role secret and verifies TLS', () => {
    expect(props.VpcConfig.SubnetIds).toEqual(
      (fetchPage.resource.Properties as CfnProps).VpcConfig.SubnetIds,
    );
    expect(props.Environment.Variables).toMatchObject({
      DATABASE_SECRET_ARN: { Ref: readerSecret.logicalId },
      DATABASE_CA_FILE: '/var/task/rds-ca.pem',
      DATABASE_SSL: 'verify-full',
    });
    const secretResources = policyOf(roleRef(status))
      .filter((s) => [s.Action].flat().some((a) => a.startsWith('secretsmanager:')))
      .map((s) => s.Resource);
    expect(secretResources).toEqual([{ Ref: readerSecret.logicalId }]);
    // Time for a paused database to resume before the read.
    expect(props.Timeout).toBe(60);
  });

  it('is created after the migrations ran', () => {
    const trigger = onlyResource(template, 'Custom::Trigger');
    const all = template.toJSON().Resources as Record<string, { DependsOn?: string[] }>;
    expect(all[status.logicalId]!.DependsOn).toEqual(expect.arrayContaining([trigger.logicalId]));
  });
});

describe('database TLS', () => {
  const functions = Object.values(template.findResources('AWS::Lambda::Function')).filter(
    (r) => r.Properties.Environment?.Variables?.DATABASE_SECRET_ARN,
  );

  it('has every function verify certificate and host name against the RDS CAs its bundle ships, not the process store nor the runtime image', () => {
    expect(functions).toHaveLength(3);
    for (const fn of functions) {
      expect(fn.Properties.Environment.Variables).toMatchObject({
        DATABASE_CA_FILE: '/var/task/rds-ca.pem',
        DATABASE_SSL: 'verify-full',
      });
      expect(fn.Properties.Environment.Variables).not.toHaveProperty('NODE_EXTRA_CA_CERTS');
    }
  });

  it('ships a databaseCaBundle override at the same bundled path, and refuses a missing file', () => {
    const { template: t } = buildStack({ databaseCaBundle: join(FIXTURE_MIGRATIONS, '0000_fixture.sql') });
    const shipped = Object.values(t.findResources('AWS::Lambda::Function')).filter(
      (r) => r.Properties.Environment?.Variables?.DATABASE_SECRET_ARN,
    );
    for (const fn of shipped) {
      expect(fn.Properties.Environment.Variables.DATABASE_CA_FILE).toBe('/var/task/rds-ca.pem');
    }
    expect(() => buildStack({ databaseCaBundle: '/nonexistent/global-bundle.pem' })).toThrow(
      /databaseCaBundle \/nonexistent\/global-bundle.pem does not exist: pass the path of a PEM file .* or leave it out to ship Amazon RDS's CAs/,
    );
  });
});

describe('database', () => {
  const props = db.resource.Properties as CfnProps;

  it('is Aurora PostgreSQL 16.3+ Serverless v2 that pauses at 0 ACUs, encrypted, with backups and deletion protection', () => {
    expect(props).toMatchObject({
      Engine: 'aurora-postgresql',
      EngineVersion: '16.6',
      ServerlessV2ScalingConfiguration: { MinCapacity: 0, MaxCapacity: 2 },
      StorageEncrypted: true,
      DeletionProtection: true,
      BackupRetentionPeriod: 7,
    });
    expect(template.toJSON().Resources[db.logicalId]).toMatchObject({
      DeletionPolicy: 'Snapshot',
      UpdateReplacePolicy: 'Snapshot',
    });
    const writer = onlyResource(template, 'AWS::RDS::DBInstance');
    expect(writer.resource.Properties).toMatchObject({
      DBInstanceClass: 'db.serverless',
      PubliclyAccessible: false,
      DBClusterIdentifier: { Ref: db.logicalId },
    });
  });

  it('keeps its master secret as long as the final snapshot, which needs that password', () => {
    const master = (id: string, t = template) =>
      Object.entries(t.findResources('AWS::SecretsManager::Secret')).find(([key]) =>
        key.includes(`Database${id}Secret`),
      )?.[1];
    expect(master('Cluster')).toMatchObject({ DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
    expect(master('Writer')).toMatchObject({ DeletionPolicy: 'Delete' });
    const { template: t } = buildStack({
      databaseRemovalPolicy: RemovalPolicy.DESTROY,
      deletionProtection: false,
    });
    expect(master('Cluster', t)).toMatchObject({ DeletionPolicy: 'Delete' });
    t.hasOutput('OnDestroy', { Value: Match.stringLikeRegexp('^Nothing') });
    template.hasOutput('OnDestroy', {
      Value: Match.stringLikeRegexp('final snapshot .* and its master secret'),
    });
  });

  it('exports its PostgreSQL log into a group with a retention, created first and deleted with the stack', () => {
    const group = onlyResource(template, 'AWS::Logs::LogGroup', {
      LogGroupName: '/aws/rds/cluster/datasyncingest-database/postgresql',
    });
    expect(group.resource.Properties.RetentionInDays).toBe(30);
    expect(template.toJSON().Resources[group.logicalId]).toMatchObject({ DeletionPolicy: 'Delete' });
    expect(props).toMatchObject({
      DBClusterIdentifier: 'datasyncingest-database',
      EnableCloudwatchLogsExports: ['postgresql'],
    });
    expect((template.toJSON().Resources[db.logicalId] as { DependsOn: string[] }).DependsOn).toContain(
      group.logicalId,
    );
  });

  it('forces TLS through its parameter group', () => {
    const pg = onlyResource(template, 'AWS::RDS::DBClusterParameterGroup');
    expect(pg.resource.Properties).toMatchObject({
      Family: 'aurora-postgresql16',
      Parameters: { 'rds.force_ssl': '1' },
    });
    expect(props.DBClusterParameterGroupName).toEqual({ Ref: pg.logicalId });
  });

  it('can be an always-on RDS instance instead (-c database=instance)', () => {
    const { template: t } = buildStack({ database: 'instance' });
    t.resourceCountIs('AWS::RDS::DBCluster', 0);
    const instance = onlyResource(t, 'AWS::RDS::DBInstance');
    expect(instance.resource.Properties).toMatchObject({
      Engine: 'postgres',
      EngineVersion: '16',
      DBInstanceClass: 'db.t4g.micro',
      StorageEncrypted: true,
      PubliclyAccessible: false,
      DeletionProtection: true,
      MultiAZ: false,
      EnableCloudwatchLogsExports: ['postgresql'],
    });
    t.hasResourceProperties('AWS::RDS::DBParameterGroup', { Parameters: { 'rds.force_ssl': '1' } });
    t.hasResourceProperties('AWS::Logs::LogGroup', {
      LogGroupName: '/aws/rds/instance/datasyncingest-database/postgresql',
      RetentionInDays: 30,
    });
    expect(stackPropsFromContext(parseContext({ database: 'instance' })).database).toBe('instance');
  });

  it('lives in the isolated subnets', () => {
    const group = onlyResource(template, 'AWS::RDS::DBSubnetGroup');
    const subnets = (group.resource.Properties.SubnetIds as { Ref: string }[]).map((s) => s.Ref);
    for (const subnet of subnets) expect(subnet).toMatch(/^NetworkVpcdatabaseSubnet/);
    const routes = Object.values(resources).filter(
      (r) =>
        r.Type === 'AWS::EC2::Route' && JSON.stringify(r.Properties.RouteTableId).includes('databaseSubnet'),
    );
    expect(routes).toEqual([]);
  });

  it('admits only the functions security group, on 5432, and nothing else', () => {
    const dbSg = (props.VpcSecurityGroupIds as { 'Fn::GetAtt': [string, string] }[])[0]!['Fn::GetAtt'][0];
    const ingress = Object.values(resources).filter(
      (r) => r.Type === 'AWS::EC2::SecurityGroupIngress' && r.Properties.GroupId['Fn::GetAtt']?.[0] === dbSg,
    );
    expect(ingress.map((r) => r.Properties)).toEqual([
      expect.objectContaining({
        IpProtocol: 'tcp',
        FromPort: 5432,
        ToPort: 5432,
        SourceSecurityGroupId: { 'Fn::GetAtt': [functionsSg, 'GroupId'] },
      }),
    ]);
    expect(resources[dbSg]!.Properties.SecurityGroupIngress).toBeUndefined();
  });
});

describe('functions security group', () => {
  it('lets out only HTTPS and PostgreSQL to the database', () => {
    expect(resources[functionsSg]!.Properties.SecurityGroupEgress).toEqual([
      expect.objectContaining({ CidrIp: '0.0.0.0/0', IpProtocol: 'tcp', FromPort: 443, ToPort: 443 }),
    ]);
    const egress = Object.values(resources).filter(
      (r) =>
        r.Type === 'AWS::EC2::SecurityGroupEgress' && r.Properties.GroupId['Fn::GetAtt']?.[0] === functionsSg,
    );
    const dbSg = (db.resource.Properties.VpcSecurityGroupIds as { 'Fn::GetAtt': [string] }[])[0]![
      'Fn::GetAtt'
    ][0];
    // PostgreSQL to the database, and HTTPS to the NAT instance (which 0.0.0.0/0 covers already).
    expect(egress.map((r) => r.Properties)).toEqual([
      expect.objectContaining({
        IpProtocol: 'tcp',
        FromPort: 5432,
        ToPort: 5432,
        DestinationSecurityGroupId: { 'Fn::GetAtt': [dbSg, 'GroupId'] },
      }),
      expect.objectContaining({
        IpProtocol: 'tcp',
        FromPort: 443,
        ToPort: 443,
        DestinationSecurityGroupId: {
          'Fn::GetAtt': [expect.stringMatching(/^NetworkVpcNatSecurityGroup/), 'GroupId'],
        },
      }),
    ]);
  });
});

describe('network', () => {
  it('egresses through one t4g.nano NAT instance by default: no NAT gateway, no interface endpoint', () => {
    template.resourceCountIs('AWS::EC2::NatGateway', 0);
    template.resourceCountIs('AWS::EC2::VPCEndpoint', 0);
    const nat = onlyResource(template, 'AWS::EC2::Instance');
    expect(nat.resource.Properties).toMatchObject({
      InstanceType: 't4g.nano',
      SourceDestCheck: false,
      CreditSpecification: { CPUCredits: 'standard' },
    });
    template.resourceCountIs('AWS::EC2::FlowLog', 1);
  });

  it('admits into the NAT instance only HTTPS from the functions', () => {
    const nat = onlyResource(template, 'AWS::EC2::Instance');
    const natSg = (nat.resource.Properties.SecurityGroupIds as { 'Fn::GetAtt': [string] }[])[0]![
      'Fn::GetAtt'
    ][0];
    expect(resources[natSg]!.Properties.SecurityGroupIngress).toBeUndefined();
    const ingress = Object.values(resources).filter(
      (r) => r.Type === 'AWS::EC2::SecurityGroupIngress' && r.Properties.GroupId['Fn::GetAtt']?.[0] === natSg,
    );
    expect(ingress.map((r) => r.Properties)).toEqual([
      expect.objectContaining({
        FromPort: 443,
        ToPort: 443,
        SourceSecurityGroupId: { 'Fn::GetAtt': [functionsSg, 'GroupId'] },
      }),
    ]);
  });

  it('can use NAT gateways and an interface endpoint that admits the functions, not the whole VPC', () => {
    const { template: t } = buildStack({
      egress: 'nat-gateway',
      natGateways: 2,
      secretsManagerEndpoint: true,
    });
    t.resourceCountIs('AWS::EC2::NatGateway', 2);
    t.resourceCountIs('AWS::EC2::Instance', 0);
    t.hasResourceProperties('AWS::EC2::VPCEndpoint', {
      VpcEndpointType: 'Interface',
      ServiceName: 'com.amazonaws.us-east-1.secretsmanager',
      PrivateDnsEnabled: true,
    });
    const json = JSON.stringify(t.toJSON());
    // The CDK default rule admits 443 from the VPC CIDR; ours names the functions' group.
    expect(json).not.toMatch(/"CidrIp":\{"Fn::GetAtt":\["NetworkVpc[0-9A-F]+","CidrBlock"\]\}/);
    const endpoint = onlyResource(t, 'AWS::EC2::VPCEndpoint');
    const sg = (endpoint.resource.Properties.SecurityGroupIds as { 'Fn::GetAtt': [string] }[])[0]![
      'Fn::GetAtt'
    ][0];
    const rules = Object.values(
      t.toJSON().Resources as Record<string, { Type: string; Properties: CfnProps }>,
    )
      .filter(
        (r) => r.Type === 'AWS::EC2::SecurityGroupIngress' && r.Properties.GroupId['Fn::GetAtt']?.[0] === sg,
      )
      .map((r) => r.Properties.SourceSecurityGroupId);
    expect(rules).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^FunctionsSecurityGroup/), 'GroupId'] }]);
  });

  it('lean profile: IPv6 egress through an egress-only gateway, no NAT, dual-stack SDK endpoints', () => {
    const { template: t } = buildStack(
      stackPropsFromContext(parseContext({ profile: 'lean', datasyncApiUrl: TEST_API_URL })),
    );
    t.resourceCountIs('AWS::EC2::NatGateway', 0);
    t.resourceCountIs('AWS::EC2::Instance', 0);
    t.resourceCountIs('AWS::EC2::EgressOnlyInternetGateway', 1);
    t.hasResourceProperties('AWS::EC2::Route', {
      DestinationIpv6CidrBlock: '::/0',
      EgressOnlyInternetGatewayId: Match.anyValue(),
    });
    for (const fn of Object.values(t.findResources('AWS::Lambda::Function')).filter(
      (r) => r.Properties.VpcConfig,
    )) {
      expect(fn.Properties.VpcConfig.Ipv6AllowedForDualStack).toBe(true);
      expect(fn.Properties.Environment.Variables.AWS_USE_DUALSTACK_ENDPOINT).toBe('true');
    }
  });
});

describe('state machine permissions', () => {
  const sm = onlyResource(template, 'AWS::StepFunctions::StateMachine');
  const statements = policyOf({ Ref: (sm.resource.Properties as CfnProps).RoleArn['Fn::GetAtt'][0] });

  it('invokes only the fetch-page function', () => {
    const invoke = statements.filter((s) => [s.Action].flat().some((a) => a.startsWith('lambda:')));
    expect(invoke).toEqual([
      expect.objectContaining({
        Action: 'lambda:InvokeFunction',
        Resource: [
          { 'Fn::GetAtt': [fetchPage.logicalId, 'Arn'] },
          { 'Fn::Join': ['', [{ 'Fn::GetAtt': [fetchPage.logicalId, 'Arn'] }, ':*']] },
        ],
      }),
    ]);
  });

  it('starts only itself', () => {
    const start = statements.filter((s) => [s.Action].flat().some((a) => a.startsWith('states:')));
    expect(start).toEqual([
      expect.objectContaining({
        Action: 'states:StartExecution',
        Resource: {
          'Fn::Join': [
            '',
            [
              'arn:',
              { Ref: 'AWS::Partition' },
              ':states:us-east-1:123456789012:stateMachine:DataSyncIngest-ingestion',
            ],
          ],
        },
      }),
    ]);
    expect(sm.resource.Properties.StateMachineName).toBe('DataSyncIngest-ingestion');
  });
});

describe('alarms and outputs', () => {
  it('alarms on failed, timed-out and aborted executions, rejected events, a stall and function errors', () => {
    for (const metric of ['ExecutionsFailed', 'ExecutionsTimedOut', 'ExecutionsAborted']) {
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: 'AWS/States',
        MetricName: metric,
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      });
    }
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'DataSyncIngest',
      MetricName: 'EventsRejected',
      Dimensions: [{ Name: 'service', Value: 'fetch-page' }],
      Statistic: 'Sum',
    });
    template.resourceCountIs('AWS::CloudWatch::Alarm', 6);
  });

  it('raises a stall when fetch-page runs for 30 minutes without storing a page', () => {
    const stall = Object.values(template.findResources('AWS::CloudWatch::Alarm')).find((a) =>
      JSON.stringify(a.Properties.Metrics ?? []).includes('invocations > 0'),
    );
    expect(stall?.Properties).toMatchObject({ EvaluationPeriods: 2, Threshold: 1 });
    const metrics = stall!.Properties.Metrics as CfnProps[];
    expect(metrics.find((m) => m.Expression)?.Expression).toBe(
      'IF(invocations > 0 AND FILL(pages, 0) == 0, 1, 0)',
    );
    expect(JSON.stringify(metrics)).toContain('"MetricName":"Invocations"');
    expect(JSON.stringify(metrics)).toContain('"MetricName":"Pages"');
    expect(JSON.stringify(metrics)).toContain(
      `{"Name":"FunctionName","Value":{"Ref":"${fetchPage.logicalId}"}}`,
    );
  });

  it('raises function errors over all three functions', () => {
    const errors = Object.values(template.findResources('AWS::CloudWatch::Alarm')).find((a) =>
      JSON.stringify(a.Properties.Metrics ?? []).includes('FILL(e0, 0)'),
    );
    const metrics = errors!.Properties.Metrics as CfnProps[];
    expect(metrics.find((m) => m.Expression)?.Expression).toBe('FILL(e0, 0) + FILL(e1, 0) + FILL(e2, 0)');
    expect(metrics.filter((m) => m.MetricStat?.Metric?.MetricName === 'Errors')).toHaveLength(3);
  });

  it('refuses a deploy whose alarms would notify nobody, naming both fixes', () => {
    const deploy = { datasyncApiUrl: TEST_API_URL, requireAlarmDestination: 'true' };
    expect(() => buildStack(stackPropsFromContext(parseContext(deploy)))).toThrow(
      /Alarms would notify nobody: pass -c alarmEmail=you@example.com .* or -c alarmTopicArn=/,
    );
    expect(() =>
      buildStack(stackPropsFromContext(parseContext({ ...deploy, alarmEmail: 'ops@example.com' }))),
    ).not.toThrow();
    // A destroy needs no alarm destination and no URL.
    expect(() =>
      buildStack({
        ...stackPropsFromContext(parseContext({ requireAlarmDestination: 'true', destroy: 'true' })),
        datasyncApiUrl: undefined,
      }),
    ).toThrow(/DataSync API URL is not set/);
    expect(
      stackPropsFromContext(parseContext({ requireAlarmDestination: 'true', destroy: 'true' })),
    ).toMatchObject({ requireAlarmDestination: false, datasyncApiUrl: 'https://destroy.invalid/api/v1' });
  });

  it('sends alarms to a topic the stack creates, or to the one given, with an optional email subscription', () => {
    const created = onlyResource(template, 'AWS::SNS::Topic');
    for (const a of Object.values(template.findResources('AWS::CloudWatch::Alarm'))) {
      expect(a.Properties.AlarmActions).toEqual([{ Ref: created.logicalId }]);
    }
    template.resourceCountIs('AWS::SNS::Subscription', 0);
    const topicArn = 'arn:aws:sns:us-east-1:123456789012:ops';
    const { template: t } = buildStack({ alarmTopicArn: topicArn, alarmEmail: 'ops@example.com' });
    t.resourceCountIs('AWS::SNS::Topic', 0);
    const alarms = Object.values(t.findResources('AWS::CloudWatch::Alarm'));
    expect(alarms).toHaveLength(6);
    for (const a of alarms) expect(a.Properties.AlarmActions).toEqual([topicArn]);
    t.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
      TopicArn: topicArn,
    });
    expect(() => parseContext({ alarmEmail: 'not-an-address' })).toThrow(
      /must be an email address[\s\S]*alarmEmail/,
    );
    expect(stackPropsFromContext(parseContext({ alarmEmail: 'ops@example.com' })).alarmEmail).toBe(
      'ops@example.com',
    );
  });

  it('outputs the log groups, the database endpoint and the status function; the dashboard URL only with one', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    for (const name of ['FetchPageLogGroup', 'MigrateLogGroup', 'StatusLogGroup']) {
      const ref = (outputs[name]!.Value as { Ref: string }).Ref;
      expect(resources[ref]!.Type).toBe('AWS::Logs::LogGroup');
    }
    const smLogGroup = (outputs.StateMachineLogGroup!.Value as { Ref: string }).Ref;
    expect(resources[smLogGroup]!.Properties.LogGroupName).toBe(
      '/aws/vendedlogs/states/DataSyncIngest-ingestion',
    );
    expect(JSON.stringify(outputs.DatabaseEndpoint!.Value)).toContain(`"${db.logicalId}","Endpoint.Address"`);
    expect(outputs).not.toHaveProperty('DashboardUrl');
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 0);
    const withDashboard = buildStack({ dashboard: true }).template.toJSON().Outputs as Record<
      string,
      { Value: unknown }
    >;
    expect(JSON.stringify(withDashboard.DashboardUrl!.Value)).toMatch(
      /cloudwatch\/home\?region=.*#dashboards:name=/,
    );
    const status = onlyResource(template, 'AWS::Lambda::Function', {
      Description: Match.stringLikeRegexp('operator CLI'),
    });
    expect(outputs.StatusFunctionName!.Value).toEqual({ Ref: status.logicalId });
  });

  it('outputs the state machine ARN, the secrets and the start command', () => {
    template.hasOutput('StateMachineArn', {
      Value: { Ref: Match.stringLikeRegexp('^IngestionStateMachine') },
    });
    template.hasOutput('DatabaseSecretArn', { Value: { Ref: dbSecretAttachment.logicalId } });
    template.hasOutput('ApiKeySecretName', { Value: 'DataSyncIngest/datasync-api-key' });
    template.hasOutput('StartExecutionCommand', {
      Value: {
        'Fn::Join': [
          '',
          [
            'aws stepfunctions start-execution --state-machine-arn ',
            { Ref: Match.stringLikeRegexp('^IngestionStateMachine') },
            ` --input '{"sourceId":"default"}'`,
          ],
        ],
      },
    });
  });
});

describe('configuration', () => {
  it('imports an existing API key secret by ARN instead of creating one', () => {
    const arn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:vendor/datasync-AbCdEf';
    const { template: t } = buildStack({ apiKeySecret: { arn } });
    expect(
      Object.keys(t.findResources('AWS::SecretsManager::Secret', { Properties: { Name: Match.anyValue() } })),
    ).toEqual([]);
    t.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ DATASYNC_API_KEY_SECRET_ARN: arn }) },
    });
  });

  it('derives the state machine and its log group names from the stack, so two stacks in a region do not collide', () => {
    const names = ['IngestA', 'IngestB'].map((stackName) => {
      const { template: t } = buildStack({ stackName });
      const sm = onlyResource(t, 'AWS::StepFunctions::StateMachine').resource.Properties;
      const logGroups = Object.values(t.findResources('AWS::Logs::LogGroup'))
        .map((r) => r.Properties.LogGroupName as string | undefined)
        .filter((n): n is string => typeof n === 'string');
      return { sm: sm.StateMachineName as string, logGroups };
    });
    expect(names).toEqual(
      ['IngestA', 'IngestB'].map((name) => ({
        sm: `${name}-ingestion`,
        logGroups: [
          `/aws/rds/cluster/${name.toLowerCase()}-database/postgresql`,
          `/aws/vendedlogs/states/${name}-ingestion`,
        ],
      })),
    );
  });

  it('may decrypt an imported API key secret under a customer-managed key, through Secrets Manager only', () => {
    const keyArn = 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    const { template: t } = buildStack({
      apiKeySecret: { name: 'vendor/datasync' },
      apiKeySecretKmsKeyArn: keyArn,
    });
    const fn = onlyResource(t, 'AWS::Lambda::Function', { Description: Match.stringLikeRegexp('page') });
    const role = { Ref: (fn.resource.Properties as CfnProps).Role['Fn::GetAtt'][0] };
    const policies = Object.values(t.findResources('AWS::IAM::Policy')).filter(
      (r) => JSON.stringify(r.Properties.Roles) === JSON.stringify([role]),
    );
    const statements = policies.flatMap((p) => p.Properties.PolicyDocument.Statement as CfnProps[]);
    expect(statements).toContainEqual({
      Action: 'kms:Decrypt',
      Effect: 'Allow',
      Resource: keyArn,
      Condition: { StringEquals: { 'kms:ViaService': 'secretsmanager.us-east-1.amazonaws.com' } },
    });
    expect(JSON.stringify(policyOf(roleRef(fetchPage)))).not.toContain('kms:');
    expect(() => buildStack({ apiKeySecretKmsKeyArn: keyArn })).toThrow(
      /pass apiKeySecretName or apiKeySecretArn/,
    );
  });

  it('honours the sizing and safety props', () => {
    const { template: t } = buildStack({
      egress: 'nat-gateway',
      natGateways: 2,
      deletionProtection: false,
      databaseRemovalPolicy: RemovalPolicy.DESTROY,
      reservedConcurrency: 2,
      stateMachineName: 'ingest-b',
    });
    t.resourceCountIs('AWS::EC2::NatGateway', 2);
    t.hasResource('AWS::RDS::DBCluster', {
      DeletionPolicy: 'Delete',
      Properties: Match.objectLike({ DeletionProtection: false }),
    });
    t.hasResourceProperties('AWS::Lambda::Function', { ReservedConcurrentExecutions: 2 });
    t.hasResourceProperties('AWS::StepFunctions::StateMachine', { StateMachineName: 'ingest-b' });
  });

  it('refuses an aws target without the DataSync API URL, naming the fix', () => {
    expect(() => new IngestionStack(skipBundlingApp(), 'S', { migrationsDir: FIXTURE_MIGRATIONS })).toThrow(
      /-c datasyncApiUrl=https:\/\/<host>\/api\/v1/,
    );
  });

  it('refuses invalid props', () => {
    expect(
      () =>
        new IngestionStack(skipBundlingApp(), 'S', {
          datasyncApiUrl: 'ftp://x',
          migrationsDir: FIXTURE_MIGRATIONS,
          reservedConcurrency: -1,
        }),
    ).toThrow(
      /Invalid IngestionStack props:[\s\S]*must be an absolute http\(s\) URL[\s\S]*at datasyncApiUrl[\s\S]*at reservedConcurrency/,
    );
  });

  it('parses command-line context strings into typed props', () => {
    const ctx = parseContext({
      target: 'aws',
      datasyncApiUrl: TEST_API_URL,
      natGateways: '2',
      deletionProtection: 'false',
      databaseRemovalPolicy: 'destroy',
      apiKeySecretName: 'vendor/datasync',
      databaseInstanceType: 't4g.small',
    });
    const props = stackPropsFromContext(ctx);
    expect(props).toMatchObject({
      natGateways: 2,
      deletionProtection: false,
      databaseRemovalPolicy: RemovalPolicy.DESTROY,
      apiKeySecret: { name: 'vendor/datasync' },
    });
    expect(props.databaseInstanceType?.toString()).toBe('t4g.small');
    expect(parseContext({}).target).toBe('aws');
  });

  it('reads the lean profile, the egress, the database kind and the dashboard from context', () => {
    expect(stackPropsFromContext(parseContext({ profile: 'lean' })).egress).toBe('ipv6');
    expect(stackPropsFromContext(parseContext({ profile: 'lean', egress: 'nat-instance' })).egress).toBe(
      'nat-instance',
    );
    expect(stackPropsFromContext(parseContext({})).egress).toBeUndefined();
    expect(
      stackPropsFromContext(
        parseContext({ dashboard: 'true', secretsManagerEndpoint: 'false', database: 'serverless' }),
      ),
    ).toMatchObject({ dashboard: true, secretsManagerEndpoint: false, database: 'serverless' });
    expect(() => parseContext({ profile: 'cheap' })).toThrow(/at profile/);
    expect(() => parseContext({ dashboard: 'yes' })).toThrow(/must be true or false[\s\S]*at dashboard/);
  });

  it('rejects bad context with the key and the fix', () => {
    expect(() => parseContext({ target: 'gcp' })).toThrow(
      /Invalid CDK context:[\s\S]*at target[\s\S]*-c key=value/,
    );
    expect(() => parseContext({ natGateways: 'two' })).toThrow(/natGateways/);
    expect(() => parseContext({ apiKeySecretName: 'a', apiKeySecretArn: 'arn:aws:x' })).toThrow(
      /either apiKeySecretName or apiKeySecretArn/,
    );
  });

  it('reserves concurrency only when asked: -c reservedConcurrency=N, 0 for none', () => {
    const fetchPageOf = (t: ReturnType<typeof buildStack>['template']) =>
      onlyResource(t, 'AWS::Lambda::Function', { Description: Match.stringLikeRegexp('page') }).resource
        .Properties;
    const fromContext = (value: string) =>
      buildStack(
        stackPropsFromContext(parseContext({ datasyncApiUrl: TEST_API_URL, reservedConcurrency: value })),
      ).template;
    expect(fetchPageOf(fromContext('0'))).not.toHaveProperty('ReservedConcurrentExecutions');
    expect(fetchPageOf(fromContext('3')).ReservedConcurrentExecutions).toBe(3);
    expect(() => parseContext({ reservedConcurrency: 'one' })).toThrow(
      /must be a whole number: 0 for no reservation[\s\S]*at reservedConcurrency/,
    );
    expect(() => parseContext({ reservedConcurrency: '-2' })).toThrow(/0 \(no reservation\) or more/);
  });

  it('chooses the chains with -c chains=auto|1..10 and hands Plan the history budget it divides', () => {
    const envOf = (context: Record<string, unknown>) =>
      (
        onlyResource(
          buildStack(stackPropsFromContext(parseContext({ datasyncApiUrl: TEST_API_URL, ...context })))
            .template,
          'AWS::Lambda::Function',
          { Description: Match.stringLikeRegexp('page') },
        ).resource.Properties as CfnProps
      ).Environment.Variables as Record<string, string>;
    expect(envOf({})).toMatchObject({ CHAINS: 'auto', MAX_ITERATIONS_PER_EXECUTION: '1000' });
    expect(envOf({ chains: '4', maxIterationsPerExecution: '1200' })).toMatchObject({
      CHAINS: '4',
      MAX_ITERATIONS_PER_EXECUTION: '1200',
    });
    expect(envOf({ chains: 'auto' }).CHAINS).toBe('auto');
    expect(parseContext({ chains: '10' }).chains).toBe(10);
    for (const bad of ['0', '11', '2.5', 'many', '']) {
      expect(() => parseContext({ chains: bad }), bad).toThrow(
        /must be auto \(chains only when[^\n]*1 to 10[\s\S]*at chains[\s\S]*-c key=value/,
      );
    }
    expect(
      () =>
        new IngestionStack(skipBundlingApp(), 'S', {
          datasyncApiUrl: TEST_API_URL,
          migrationsDir: FIXTURE_MIGRATIONS,
          chains: 12,
        }),
    ).toThrow(/Invalid IngestionStack props:[\s\S]*1 to 10[\s\S]*at chains/);
  });

  it('builds the app from context', async () => {
    const { buildApp } = await import('#infra/app.ts');
    const app = new App({
      context: {
        'aws:cdk:bundling-stacks': [],
        datasyncApiUrl: TEST_API_URL,
        stackName: 'CtxStack',
        stateMachineName: 'from-context',
      },
    });
    const { stack } = buildApp(app, { migrationsDir: FIXTURE_MIGRATIONS });
    expect(stack.stackName).toBe('CtxStack');
    expect(stack.ingestStateMachine.stateMachineName).toBe('from-context');
  });
});

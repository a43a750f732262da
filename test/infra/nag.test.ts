import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { afterAll, describe, expect, it } from 'vitest';
import { IngestionStack, type IngestionStackProps } from '#infra/ingestion-stack.ts';
import { FIXTURE_MIGRATIONS, TEST_API_URL } from './support.ts';

const outdirs: string[] = [];
afterAll(() => {
  for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * Synthesizes with the AwsSolutions pack the way `cdk synth` does; cdk-nag 3 reports findings as
 * policy-validation violations that make synth throw, with the report written to the outdir.
 */
function nagFindings(props: IngestionStackProps, pack = (app: App) => new AwsSolutionsChecks(app)) {
  const outdir = mkdtempSync(join(tmpdir(), 'nag-'));
  outdirs.push(outdir);
  const app = new App({ outdir, context: { 'aws:cdk:bundling-stacks': [] } });
  new IngestionStack(app, 'Nag', {
    datasyncApiUrl: TEST_API_URL,
    migrationsDir: FIXTURE_MIGRATIONS,
    ...props,
  });
  Validations.of(app).addPlugins(pack(app));
  try {
    app.synth();
    return [];
  } catch (error) {
    const report = JSON.parse(readFileSync(join(outdir, 'validation-report.json'), 'utf8')) as {
      pluginReports: {
        violations: { ruleName: string; violatingConstructs: { constructPath: string }[] }[];
      }[];
    };
    const violations = report.pluginReports.flatMap((r) => r.violations);
    if (violations.length === 0) throw error;
    return violations.flatMap((v) => v.violatingConstructs.map((c) => `${v.ruleName} at ${c.constructPath}`));
  }
}

describe('cdk-nag AwsSolutions', () => {
  it('has no unacknowledged finding on the aws target', () => {
    expect(nagFindings({})).toEqual([]);
  });

  it('has no unacknowledged finding on the localstack target', () => {
    expect(nagFindings({ target: 'localstack' })).toEqual([]);
  });

  it.each([
    ['the lean profile (IPv6 egress, no NAT)', { egress: 'ipv6' }],
    [
      'an RDS instance behind a NAT gateway, with the endpoint and the dashboard',
      {
        database: 'instance',
        egress: 'nat-gateway',
        secretsManagerEndpoint: true,
        dashboard: true,
      },
    ],
  ] as const)('has no unacknowledged finding with %s', (_name, props) => {
    expect(nagFindings(props)).toEqual([]);
  });

  it('has no unacknowledged finding with an API key secret imported by name', () => {
    expect(nagFindings({ apiKeySecret: { name: 'vendor/datasync' } })).toEqual([]);
  });

  it('does report findings: the acknowledgements, not a silent plugin, make the stack clean', () => {
    // isAcknowledged is private in the typings; replacing it on the instance makes the pack
    // report every finding it sees.
    const ignoringAcknowledgements = (app: App) =>
      Object.defineProperty(new AwsSolutionsChecks(app), 'isAcknowledged', { value: () => false });
    expect(nagFindings({}, ignoringAcknowledgements).sort()).toEqual(
      [
        'AwsSolutions-SMG4 at Nag/Database/Cluster/Secret/Resource',
        'AwsSolutions-SMG4 at Nag/Database/WriterSecret/Resource',
        'AwsSolutions-SMG4 at Nag/Database/ReaderSecret/Resource',
        'AwsSolutions-SMG4 at Nag/ApiKeySecret/Resource',
        'AwsSolutions-RDS6 at Nag/Database/Cluster/Resource',
        ...['EC26', 'EC28', 'EC29'].map(
          (rule) => `AwsSolutions-${rule} at Nag/Network/Vpc/publicSubnet1/NatInstance/Resource`,
        ),
        ...['Migrate', 'FetchPage', 'Status'].flatMap((fn) => [
          `AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole] at Nag/${fn}/Function/ServiceRole/Resource`,
          `AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole] at Nag/${fn}/Function/ServiceRole/Resource`,
          `AwsSolutions-IAM5[Resource::*] at Nag/${fn}/Function/ServiceRole/DefaultPolicy/Resource`,
        ]),
        'AwsSolutions-IAM5[Resource::*] at Nag/Ingestion/StateMachine/Role/DefaultPolicy/Resource',
        'AwsSolutions-IAM5[Resource::<FetchPageFunction3EACD890.Arn>:*] at Nag/Ingestion/StateMachine/Role/DefaultPolicy/Resource',
      ].sort(),
    );
  });
});

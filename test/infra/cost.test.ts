import { describe, expect, it } from 'vitest';
import {
  type CfnTemplate,
  docsCostSection,
  docsCostSectionInFile,
  idleCost,
  normaliseTables,
  PROFILES,
  profileTemplate,
  runCost,
} from '#infra/cost.ts';

const templates = Object.fromEntries(PROFILES.map((p) => [p.name, profileTemplate(p.context)])) as Record<
  (typeof PROFILES)[number]['name'],
  CfnTemplate
>;

/** Resource types that bill while idle, and so must each have a row. */
const BILLED_WHILE_IDLE = [
  'AWS::EC2::NatGateway',
  'AWS::EC2::EIP',
  'AWS::EC2::Instance',
  'AWS::EC2::VPCEndpoint',
  'AWS::RDS::DBInstance',
  'AWS::RDS::DBCluster',
  'AWS::SecretsManager::Secret',
  'AWS::CloudWatch::Alarm',
  'AWS::CloudWatch::Dashboard',
  'AWS::Scheduler::Schedule',
];
/** Types that cost nothing while nothing runs (per request, per GB logged, or free). */
const FREE_WHILE_IDLE = new Set([
  'AWS::EC2::VPC',
  'AWS::EC2::VPCCidrBlock',
  'AWS::EC2::Subnet',
  'AWS::EC2::RouteTable',
  'AWS::EC2::SubnetRouteTableAssociation',
  'AWS::EC2::Route',
  'AWS::EC2::InternetGateway',
  'AWS::EC2::EgressOnlyInternetGateway',
  'AWS::EC2::VPCGatewayAttachment',
  'AWS::EC2::SecurityGroup',
  'AWS::EC2::SecurityGroupIngress',
  'AWS::EC2::SecurityGroupEgress',
  'AWS::EC2::FlowLog',
  'AWS::IAM::Role',
  'AWS::IAM::Policy',
  'AWS::IAM::InstanceProfile',
  'AWS::Logs::LogGroup',
  'AWS::RDS::DBClusterParameterGroup',
  'AWS::RDS::DBParameterGroup',
  'AWS::RDS::DBSubnetGroup',
  'AWS::SecretsManager::SecretTargetAttachment',
  'AWS::Lambda::Function',
  'AWS::Lambda::Version',
  'AWS::StepFunctions::StateMachine',
  'Custom::Trigger',
  'AWS::SNS::Topic',
  'AWS::SNS::TopicPolicy',
  'AWS::SNS::Subscription',
  'AWS::Scheduler::ScheduleGroup',
]);

describe('npm run cost', () => {
  it('keeps the default stack at or under $12 a month idle, and the lean profile at or under $5', () => {
    // The default as deployed: its top-up schedule (every 6 hours) and the wakes it costs included.
    const byDefault = idleCost(templates.default);
    expect(byDefault.rows.map((r) => r.item)).toContain('Aurora woken by each scheduled top-up');
    expect(byDefault.total).toBeLessThanOrEqual(12);
    expect(idleCost(templates.lean).total).toBeLessThanOrEqual(5);
    // Hourly top-ups wake the paused database 730 times a month: priced, not hidden.
    const hourly = idleCost(templates['default with hourly top-ups']);
    expect(hourly.total).toBeGreaterThan(idleCost(templates['default, no schedule']).total + 4);
    // The stack as it was (NAT gateway, interface endpoint, always-on instance, dashboard).
    expect(
      idleCost(templates['before (NAT gateway, endpoint, RDS instance, dashboard)']).total,
    ).toBeGreaterThan(60);
  });

  it('prices every resource type that bills by the hour or month, and knows every other type is free while idle', () => {
    for (const template of Object.values(templates)) {
      for (const { Type } of Object.values(template.Resources)) {
        expect(
          BILLED_WHILE_IDLE.includes(Type) || FREE_WHILE_IDLE.has(Type),
          `${Type} is neither priced nor known free`,
        ).toBe(true);
      }
    }
  });

  it('reads the NAT instance, its address and its volume from the template, and no NAT gateway', () => {
    const items = idleCost(templates['default, no schedule']).rows.map((r) => r.item);
    expect(items).toEqual(expect.arrayContaining(['EC2 t4g.nano (NAT instance)', 'its public IPv4 address']));
    expect(items).not.toContain('NAT gateway');
    expect(runCost(templates['default, no schedule']).rows.map((r) => r.item)).not.toContain(
      'NAT gateway data',
    );
  });

  it('prices a schedule by its rate when the stack has one', () => {
    const withSchedule: CfnTemplate = {
      Resources: {
        ...templates.lean.Resources,
        S: { Type: 'AWS::Scheduler::Schedule', Properties: { ScheduleExpression: 'rate(1 hour)' } },
      },
    };
    const row = idleCost(withSchedule).rows.find((r) => r.item.startsWith('EventBridge schedule'));
    expect(row).toMatchObject({ arithmetic: '730 invocations x $1/M' });
    expect(Object.values(templates.lean.Resources).map((r) => r.Type)).not.toContain(
      'AWS::Scheduler::Schedule',
    );
  });

  it('docs/deploy.md shows exactly the tables the templates give (npm run cost -- --docs rewrites them)', () => {
    const inFile = docsCostSectionInFile();
    expect(inFile).toBeDefined();
    expect(normaliseTables(inFile as string)).toBe(
      normaliseTables(docsCostSection((p) => templates[p.name])),
    );
  });
});

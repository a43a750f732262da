import { Capture, Match, type Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { definitionToAsl } from '#infra/definition.ts';
import { buildStack, onlyResource } from './support.ts';

const local = buildStack({ target: 'localstack', datasyncApiUrl: undefined }).template;
const aws = buildStack().template;

function definitionOf(template: Template) {
  const capture = new Capture();
  template.hasResourceProperties('AWS::StepFunctions::StateMachine', { DefinitionString: capture });
  return definitionToAsl(capture.asObject());
}

describe('localstack target', () => {
  it('has no VPC, no RDS and no function in a VPC', () => {
    local.resourceCountIs('AWS::EC2::VPC', 0);
    local.resourceCountIs('AWS::EC2::NatGateway', 0);
    local.resourceCountIs('AWS::RDS::DBInstance', 0);
    const functions = Object.values(local.findResources('AWS::Lambda::Function'));
    expect(functions.length).toBeGreaterThanOrEqual(2);
    for (const fn of functions) expect(fn.Properties.VpcConfig).toBeUndefined();
  });

  it('names the compose Postgres through a secret with TLS off, and wires it and the simulator into fetch-page', () => {
    const dbSecret = onlyResource(local, 'AWS::SecretsManager::Secret', {
      Description: Match.stringLikeRegexp('compose Postgres'),
    });
    expect(JSON.parse(dbSecret.resource.Properties.SecretString as string)).toEqual({
      host: 'postgres',
      port: 5432,
      username: 'postgres',
      password: 'postgres',
      dbname: 'datasync',
      ssl: false,
    });
    const apiKey = onlyResource(local, 'AWS::SecretsManager::Secret', {
      Name: 'DataSyncIngest/datasync-api-key',
    });
    const fetch = onlyResource(local, 'AWS::Lambda::Function', {
      Description: Match.stringLikeRegexp('page'),
    });
    expect(fetch.resource.Properties).toMatchObject({
      Runtime: 'nodejs24.x',
      Architectures: ['arm64'],
      Environment: {
        Variables: expect.objectContaining({
          DATASYNC_API_URL: 'http://simulator:4010/api/v1',
          DATABASE_SECRET_ARN: { Ref: dbSecret.logicalId },
          DATASYNC_API_KEY_SECRET_ARN: { Ref: apiKey.logicalId },
        }),
      },
    });
    const migrate = onlyResource(local, 'AWS::Lambda::Function', {
      Description: Match.stringLikeRegexp('migrations'),
    });
    expect(migrate.resource.Properties).toMatchObject({
      Environment: {
        Variables: expect.objectContaining({ DATABASE_SECRET_ARN: { Ref: dbSecret.logicalId } }),
      },
    });
    // The compose Postgres has no TLS: asking to verify it would refuse every connection.
    for (const fn of [fetch, migrate]) {
      expect(JSON.stringify(fn.resource.Properties.Environment)).not.toContain('DATABASE_SSL');
    }
  });

  it('deploys the same state machine definition as the aws target, apart from ARNs', () => {
    const withoutArns = (asl: Record<string, unknown>) =>
      JSON.parse(JSON.stringify(asl).replace(/arn:aws:lambda:[^"]+/g, '<lambda-arn>'));
    const localAsl = withoutArns(definitionOf(local));
    expect(localAsl).toEqual(withoutArns(definitionOf(aws)));
    expect(JSON.stringify(localAsl)).toContain('"Resource":"<lambda-arn>"');
  });

  it('keeps the migration trigger, the alarms and the outputs', () => {
    local.resourceCountIs('Custom::Trigger', 1);
    local.resourceCountIs('AWS::CloudWatch::Alarm', 6);
    local.hasOutput('StartExecutionCommand', Match.anyValue());
  });
});

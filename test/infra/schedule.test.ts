import { App } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { buildStack, onlyResource } from './support.ts';

/** The top-up schedule (infra/constructs/schedule.ts) in the synthesized template. */

/** Synthesized CloudFormation is untyped JSON; the assertions below state the shape they expect. */
// biome-ignore lint/suspicious/noExplicitAny: template JSON has no static type
type CfnProps = Record<string, any>;

function appWith(context: Record<string, string>): App {
  return new App({ context: { 'aws:cdk:bundling-stacks': [], ...context } });
}

describe('the top-up schedule', () => {
  const { template } = buildStack();

  it('starts the state machine every hour with the source and ifRunning: skip', () => {
    const schedule = onlyResource(template, 'AWS::Scheduler::Schedule');
    const p = schedule.resource.Properties as CfnProps;
    expect(p.ScheduleExpression).toBe('rate(6 hours)');
    expect(p.State).toBe('ENABLED');
    expect(JSON.parse(p.Target.Input)).toEqual({ sourceId: 'default', ifRunning: 'skip' });
    expect(p.Target.Arn.Ref).toMatch(/IngestionStateMachine/);
    expect(p.Target.RetryPolicy).toEqual({ MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 3 });
  });

  it('gives the scheduler a role that may start this state machine and nothing else', () => {
    const schedule = onlyResource(template, 'AWS::Scheduler::Schedule');
    const roleId = (schedule.resource.Properties as CfnProps).Target.RoleArn['Fn::GetAtt'][0];
    const role = template.toJSON().Resources[roleId];
    expect(role.Properties.AssumeRolePolicyDocument.Statement[0].Principal).toEqual({
      Service: 'scheduler.amazonaws.com',
    });
    template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [{ Ref: roleId }],
      PolicyDocument: {
        Statement: [
          {
            Action: 'states:StartExecution',
            Effect: 'Allow',
            Resource: { Ref: Match.stringLikeRegexp('IngestionStateMachine') },
          },
        ],
      },
    });
  });

  it('tells the fetch-page function the lookback (15 minutes by default)', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: Match.stringLikeRegexp('page'),
      Environment: { Variables: Match.objectLike({ TOPUP_LOOKBACK_MS: '900000' }) },
    });
  });

  it('follows -c schedule, -c scheduleSource and -c lookback, and -c schedule=none adds none', () => {
    const cron = buildStack(
      {},
      appWith({ schedule: 'cron(0 6 * * ? *)', scheduleSource: 'eu', lookback: '1h' }),
    ).template;
    const p = onlyResource(cron, 'AWS::Scheduler::Schedule').resource.Properties as CfnProps;
    expect(p.ScheduleExpression).toBe('cron(0 6 * * ? *)');
    expect(JSON.parse(p.Target.Input)).toEqual({ sourceId: 'eu', ifRunning: 'skip' });
    cron.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ TOPUP_LOOKBACK_MS: '3600000' }) },
    });
    const none = buildStack({}, appWith({ schedule: 'none' })).template;
    none.resourceCountIs('AWS::Scheduler::Schedule', 0);
  });

  it('refuses an expression it cannot run, naming the key and the forms it takes', () => {
    expect(() => buildStack({}, appWith({ schedule: 'every hour' }))).toThrow(
      /rate\(N minute[\s\S]*at schedule/,
    );
    expect(() => buildStack({}, appWith({ lookback: 'soon' }))).toThrow(/15m[\s\S]*at lookback/);
  });
});

import validator from 'asl-validator';
import { Capture, Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { parseContext } from '#infra/config.ts';
import { definitionToAsl, synthesizeDefinition } from '#infra/definition.ts';
import {
  CHILD_EXECUTION_NAME,
  CONTINUE_AS_NEW_STATE,
  CONTINUED_STATE,
  DONE_CHOICE_STATE,
  EXECUTION_ALREADY_EXISTS,
  FAILED_STATE,
  FATAL_ERRORS,
  FETCH_PAGE_STATE,
  SUCCEEDED_STATE,
  TRANSIENT_ERRORS,
  WAIT_STATE,
} from '#infra/state-machine.ts';
import { buildStack, FIXTURE_MIGRATIONS } from './support.ts';

const { template } = buildStack({ maxIterationsPerExecution: 700 });
const definitionCapture = new Capture();
template.hasResourceProperties('AWS::StepFunctions::StateMachine', { DefinitionString: definitionCapture });
const definitionString = JSON.stringify(definitionToAsl(definitionCapture.asObject()));

/** Asserts with the CDK matcher on the serialized definition, failing with its readable report. */
function expectDefinition(pattern: Record<string, unknown>) {
  const result = Match.serializedJson(Match.objectLike(pattern)).test(definitionString);
  expect(result.isSuccess, result.renderMismatch()).toBe(true);
}

type State = Record<string, unknown> & { Type: string };
const asl = JSON.parse(definitionString) as {
  StartAt: string;
  States: Record<string, State>;
  TimeoutSeconds: number;
};

describe('state machine definition', () => {
  it('starts at FetchPage, which invokes the function with the execution id and the whole state', () => {
    expectDefinition({
      StartAt: FETCH_PAGE_STATE,
      States: Match.objectLike({
        [FETCH_PAGE_STATE]: Match.objectLike({
          Type: 'Task',
          Parameters: { 'executionId.$': '$$.Execution.Id', 'state.$': '$' },
          TimeoutSeconds: 90,
          Next: DONE_CHOICE_STATE,
        }),
      }),
    });
    const fetch = asl.States[FETCH_PAGE_STATE]!;
    // payloadResponseOnly: the function ARN is the resource, and no ResultPath/ResultSelector
    // reshapes the output (the local runner stores an explicit ResultPath "$" under a "$" key).
    expect(fetch.Resource).toMatch(/^arn:aws:lambda:.*:function:FetchPageFunction/);
    expect(fetch).not.toHaveProperty('ResultPath');
    expect(fetch).not.toHaveProperty('ResultSelector');
    expect(fetch).not.toHaveProperty('OutputPath');
  });

  it('routes done to Succeeded, the iteration limit to ContinueAsNew, and everything else to the Wait', () => {
    expectDefinition({
      States: Match.objectLike({
        [DONE_CHOICE_STATE]: {
          Type: 'Choice',
          Choices: [
            { Variable: '$.done', BooleanEquals: true, Next: SUCCEEDED_STATE },
            { Variable: '$.iteration', NumericGreaterThanEquals: 700, Next: CONTINUE_AS_NEW_STATE },
          ],
          Default: WAIT_STATE,
        },
        [WAIT_STATE]: { Type: 'Wait', SecondsPath: '$.waitSeconds', Next: FETCH_PAGE_STATE },
        [SUCCEEDED_STATE]: { Type: 'Succeed' },
      }),
    });
  });

  it('continues as a new execution of itself under a deterministic name, linked to its parent', () => {
    expectDefinition({
      States: Match.objectLike({
        [CONTINUE_AS_NEW_STATE]: Match.objectLike({
          Type: 'Task',
          Resource: 'arn:aws:states:::states:startExecution',
          Parameters: {
            'StateMachineArn.$': '$$.StateMachine.Id',
            'Name.$': CHILD_EXECUTION_NAME,
            Input: {
              'sourceId.$': '$.sourceId',
              'parentExecutionId.$': '$$.Execution.Id',
              'AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID.$': '$$.Execution.Id',
            },
          },
          TimeoutSeconds: Match.anyValue(),
          Next: CONTINUED_STATE,
          Catch: [
            { ErrorEquals: [EXECUTION_ALREADY_EXISTS], Next: CONTINUED_STATE },
            { ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: FAILED_STATE },
          ],
        }),
        [CONTINUED_STATE]: { Type: 'Succeed' },
      }),
    });
    // Not the .sync integration: the parent must end so its history stops growing.
    expect(String(asl.States[CONTINUE_AS_NEW_STATE]!.Resource)).not.toContain('.sync');
    // A name already taken is never retried: the retrier for it comes first and allows 0 attempts.
    expect((asl.States[CONTINUE_AS_NEW_STATE]!.Retry as unknown[])[0]).toEqual({
      ErrorEquals: [EXECUTION_ALREADY_EXISTS],
      MaxAttempts: 0,
    });
  });

  it('retries Lambda service faults including throttling, and transient errors with full jitter', () => {
    const retry = asl.States[FETCH_PAGE_STATE]!.Retry as Record<string, unknown>[];
    expect(retry).toHaveLength(3);
    expect(retry[0]).toMatchObject({
      ErrorEquals: expect.arrayContaining([
        'Lambda.ServiceException',
        'Lambda.AWSLambdaException',
        'Lambda.SdkClientException',
        'Lambda.ClientExecutionTimeoutException',
        'Lambda.TooManyRequestsException',
      ]),
      JitterStrategy: 'FULL',
      BackoffRate: 2,
    });
    expect(retry[2]!.ErrorEquals).toEqual([...TRANSIENT_ERRORS]);
    for (const r of retry) {
      expect(r).toMatchObject({ JitterStrategy: 'FULL', BackoffRate: 2 });
      expect(r.MaxAttempts as number).toBeGreaterThan(0);
      expect(r.MaxAttempts as number).toBeLessThanOrEqual(10);
    }
  });

  it('retries an invocation lost to a function timeout or out-of-memory (a page is atomic)', () => {
    // Step Functions reports those as Lambda.Unknown / Sandbox.Timedout: without a retrier naming
    // them, the catch-all sends the execution to Failed.
    const retried = (asl.States[FETCH_PAGE_STATE]!.Retry as { ErrorEquals: string[] }[]).flatMap(
      (r) => r.ErrorEquals,
    );
    for (const name of ['Lambda.Unknown', 'Sandbox.Timedout', 'States.Timeout']) {
      expect(retried).toContain(name);
    }
  });

  it('never retries fatal errors and sends them, and anything left after retries, to Failed', () => {
    const fetch = asl.States[FETCH_PAGE_STATE]!;
    const retried = (fetch.Retry as { ErrorEquals: string[] }[]).flatMap((r) => r.ErrorEquals);
    for (const fatal of FATAL_ERRORS) expect(retried).not.toContain(fatal);
    expect(retried).not.toContain('States.ALL');
    expect(fetch.Catch).toEqual([
      { ErrorEquals: [...FATAL_ERRORS], ResultPath: '$.error', Next: FAILED_STATE },
      { ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: FAILED_STATE },
    ]);
    expect(asl.States[FAILED_STATE]).toEqual({
      Type: 'Fail',
      ErrorPath: '$.error.Error',
      CausePath: '$.error.Cause',
    });
  });

  it('bounds the execution with the overall timeout', () => {
    expect(asl.TimeoutSeconds).toBe(24 * 3600);
  });

  it('logs everything with execution data and traces with X-Ray', () => {
    template.hasResourceProperties('AWS::StepFunctions::StateMachine', {
      StateMachineName: 'DataSyncIngest-ingestion',
      StateMachineType: 'STANDARD',
      TracingConfiguration: { Enabled: true },
      LoggingConfiguration: Match.objectLike({ Level: 'ALL', IncludeExecutionData: true }),
    });
    template.hasResourceProperties('AWS::Logs::LogGroup', {
      LogGroupName: '/aws/vendedlogs/states/DataSyncIngest-ingestion',
      RetentionInDays: 30,
    });
  });
});

describe('synthesizeDefinition', () => {
  const definition = synthesizeDefinition({ migrationsDir: FIXTURE_MIGRATIONS });

  it('returns the same definition the stack deploys, as plain ASL', () => {
    expect(definition).toEqual(
      JSON.parse(
        definitionString.replace('"NumericGreaterThanEquals":700', '"NumericGreaterThanEquals":1000'),
      ),
    );
    expect(JSON.stringify(definition)).not.toMatch(/Fn::|"Ref"|\$\{Token/);
  });

  it('passes asl-validator', () => {
    const result = validator(definition);
    expect(result.errorsText()).toBe('');
    expect(result.isValid).toBe(true);
  });

  it('is JSONPath with a TimeoutSeconds on every task (the local runner needs both)', () => {
    const states = (definition as { States: Record<string, State> }).States;
    expect(definition).not.toHaveProperty('QueryLanguage', 'JSONata');
    for (const state of Object.values(states)) {
      if (state.Type === 'Task') expect(state.TimeoutSeconds).toEqual(expect.any(Number));
    }
    expect(Object.keys(states).sort()).toEqual(
      [
        FETCH_PAGE_STATE,
        DONE_CHOICE_STATE,
        WAIT_STATE,
        CONTINUE_AS_NEW_STATE,
        CONTINUED_STATE,
        SUCCEEDED_STATE,
        FAILED_STATE,
      ].sort(),
    );
  });

  it('rejects an iteration limit that would leave too little history for retries', () => {
    // 2500 iterations are about 22,500 of the 25,000 events: a few retried pages overflow it.
    expect(() =>
      synthesizeDefinition({ migrationsDir: FIXTURE_MIGRATIONS, maxIterationsPerExecution: 2500 }),
    ).toThrow(/maxIterationsPerExecution must be a whole number from 1 to 2000/);
    expect(() => parseContext({ maxIterationsPerExecution: '2001' })).toThrow(
      /must be at most 2000[\s\S]*at maxIterationsPerExecution/,
    );
  });
});

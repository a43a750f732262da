import validator from 'asl-validator';
import { Capture, Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { parseContext } from '#infra/config.ts';
import { definitionToAsl, synthesizeDefinition } from '#infra/definition.ts';
import {
  CHAIN_DONE_CHOICE_STATE,
  CHAIN_ENDED_STATE,
  CHAIN_FAILED_STATE,
  CHAIN_PAUSED_STATE,
  CHAINS_MAP_STATE,
  CHILD_EXECUTION_NAME,
  CONTINUE_AS_NEW_STATE,
  CONTINUED_STATE,
  EXECUTION_ALREADY_EXISTS,
  FAILED_STATE,
  FATAL_ERRORS,
  FETCH_PAGE_STATE,
  FUNCTION_TASK_STATES,
  PLAN_STATE,
  PLANNED_CHOICE_STATE,
  REPLAN_STATE,
  REPLAN_STATE_EXPRESSION,
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
type Graph = { StartAt: string; States: Record<string, State> };
const asl = JSON.parse(definitionString) as Graph & { TimeoutSeconds: number };
const chainsMap = asl.States[CHAINS_MAP_STATE] as State & { ItemProcessor: Graph };
const chainStates = chainsMap.ItemProcessor.States;
/** Plan at the top, FetchPage inside the Map's iterations: both invoke the function. */
const functionTasks: Record<string, State> = {
  [PLAN_STATE]: asl.States[PLAN_STATE]!,
  [FETCH_PAGE_STATE]: chainStates[FETCH_PAGE_STATE]!,
};

describe('state machine definition', () => {
  it('starts at Plan, which invokes the function with the execution id, action plan and the whole state', () => {
    expectDefinition({
      StartAt: PLAN_STATE,
      States: Match.objectLike({
        [PLAN_STATE]: Match.objectLike({
          Type: 'Task',
          Parameters: { 'executionId.$': '$$.Execution.Id', action: 'plan', 'state.$': '$' },
          TimeoutSeconds: 90,
          Next: PLANNED_CHOICE_STATE,
        }),
      }),
    });
  });

  it('invokes the same function from Plan and FetchPage, output unshaped (payloadResponseOnly)', () => {
    expect(chainStates[FETCH_PAGE_STATE]).toMatchObject({
      Type: 'Task',
      Parameters: { 'executionId.$': '$$.Execution.Id', 'state.$': '$' },
      TimeoutSeconds: 90,
      Next: CHAIN_DONE_CHOICE_STATE,
    });
    expect(chainStates[FETCH_PAGE_STATE]!.Parameters).not.toHaveProperty('action');
    for (const task of Object.values(functionTasks)) {
      // The function ARN is the resource, and no ResultPath/ResultSelector reshapes the output
      // (the local runner stores an explicit ResultPath "$" under a "$" key).
      expect(task.Resource).toMatch(/^arn:aws:lambda:.*:function:FetchPageFunction/);
      expect(task).not.toHaveProperty('ResultPath');
      expect(task).not.toHaveProperty('ResultSelector');
      expect(task).not.toHaveProperty('OutputPath');
    }
    expect(functionTasks[PLAN_STATE]!.Resource).toBe(functionTasks[FETCH_PAGE_STATE]!.Resource);
    expect(FUNCTION_TASK_STATES).toEqual([PLAN_STATE, FETCH_PAGE_STATE]);
  });

  it('routes a finished plan to Succeeded, the second round to ContinueAsNew, anything else to the chains', () => {
    expectDefinition({
      States: Match.objectLike({
        [PLANNED_CHOICE_STATE]: {
          Type: 'Choice',
          Choices: [
            { Variable: '$.done', BooleanEquals: true, Next: SUCCEEDED_STATE },
            { Variable: '$.round', NumericGreaterThanEquals: 1, Next: CONTINUE_AS_NEW_STATE },
          ],
          Default: CHAINS_MAP_STATE,
        },
        [SUCCEEDED_STATE]: { Type: 'Succeed' },
      }),
    });
  });

  it('runs every planned chain at once in a Map over $.chains, keeping only what Replan needs', () => {
    expect(chainsMap).toMatchObject({
      Type: 'Map',
      ItemsPath: '$.chains',
      // The items are the chains' first states, whole: no selector picks (and requires) fields.
      ResultSelector: { round: 1 },
      ResultPath: '$.replan',
      Next: REPLAN_STATE,
      Catch: [{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: FAILED_STATE }],
    });
    expect(chainsMap).not.toHaveProperty('ItemSelector');
    expect(chainsMap).not.toHaveProperty('Parameters');
    // 0 (the default, so absent) = no limit: a chain held back would only start when another ends.
    expect(chainsMap.MaxConcurrency ?? 0).toBe(0);
    expect(chainsMap.ItemProcessor).toMatchObject({
      ProcessorConfig: { Mode: 'INLINE' },
      StartAt: FETCH_PAGE_STATE,
    });
  });

  it('loops one chain inside the Map: FetchPage -> ChainDone? -> ended, paused at its cap, or Wait', () => {
    expect(Object.keys(chainStates).sort()).toEqual(
      [
        FETCH_PAGE_STATE,
        CHAIN_DONE_CHOICE_STATE,
        WAIT_STATE,
        CHAIN_ENDED_STATE,
        CHAIN_PAUSED_STATE,
        CHAIN_FAILED_STATE,
      ].sort(),
    );
    expect(chainStates[CHAIN_DONE_CHOICE_STATE]).toEqual({
      Type: 'Choice',
      Choices: [
        { Variable: '$.done', BooleanEquals: true, Next: CHAIN_ENDED_STATE },
        // The cap comes from Plan (the history budget divided among the chains), not the definition.
        { Variable: '$.iteration', NumericGreaterThanEqualsPath: '$.perChainCap', Next: CHAIN_PAUSED_STATE },
      ],
      Default: WAIT_STATE,
    });
    expect(chainStates[WAIT_STATE]).toEqual({
      Type: 'Wait',
      SecondsPath: '$.waitSeconds',
      Next: FETCH_PAGE_STATE,
    });
    expect(chainStates[CHAIN_ENDED_STATE]).toEqual({ Type: 'Succeed' });
    expect(chainStates[CHAIN_PAUSED_STATE]).toEqual({ Type: 'Succeed' });
    expect(chainStates[CHAIN_FAILED_STATE]).toEqual({
      Type: 'Fail',
      ErrorPath: '$.error.Error',
      CausePath: '$.error.Cause',
    });
    expect(definitionString).not.toContain('700');
  });

  it("plans again after the Map with this execution's input and round 1, then continues as new", () => {
    expect(asl.States[REPLAN_STATE]).toEqual({
      Type: 'Pass',
      Parameters: { 'state.$': REPLAN_STATE_EXPRESSION },
      OutputPath: '$.state',
      Next: PLAN_STATE,
    });
    expect(REPLAN_STATE_EXPRESSION).toBe('States.JsonMerge($$.Execution.Input, $.replan, false)');
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

  it.each(FUNCTION_TASK_STATES)(
    '%s retries Lambda service faults including throttling, and transient errors with full jitter',
    (name) => {
      const retry = functionTasks[name]!.Retry as Record<string, unknown>[];
      expect(retry).toHaveLength(4);
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
      expect(retry[3]!.ErrorEquals).toEqual([...TRANSIENT_ERRORS]);
      for (const r of retry) {
        expect(r).toMatchObject({ JitterStrategy: 'FULL', BackoffRate: 2 });
        expect(r.MaxAttempts as number).toBeGreaterThan(0);
        expect(r.MaxAttempts as number).toBeLessThanOrEqual(10);
      }
    },
  );

  it.each(FUNCTION_TASK_STATES)(
    '%s retries an invocation lost to a function timeout or out-of-memory (a page is atomic)',
    (name) => {
      // Step Functions reports those as Lambda.Unknown / Sandbox.Timedout: without a retrier naming
      // them, the catch-all sends the execution to Failed.
      const retried = (functionTasks[name]!.Retry as { ErrorEquals: string[] }[]).flatMap(
        (r) => r.ErrorEquals,
      );
      for (const name of ['Lambda.Unknown', 'Sandbox.Timedout', 'States.Timeout']) {
        expect(retried).toContain(name);
      }
    },
  );

  it.each(FUNCTION_TASK_STATES)(
    '%s waits out a VPC function that went inactive while idle, and the ENI faults of its recreation',
    (name) => {
      // An idle month is the normal case: the first invoke after it answers ResourceNotReadyException.
      const retry = (functionTasks[name]!.Retry as Record<string, unknown>[]).find((r) =>
        (r.ErrorEquals as string[]).includes('Lambda.ResourceNotReadyException'),
      );
      expect(retry).toEqual({
        ErrorEquals: [
          'Lambda.ResourceNotReadyException',
          'Lambda.EC2ThrottledException',
          'Lambda.ENILimitReachedException',
          'Lambda.EC2UnexpectedException',
          'Lambda.ResourceConflictException',
        ],
        IntervalSeconds: 10,
        MaxAttempts: 6,
        BackoffRate: 2,
        JitterStrategy: 'FULL',
      });
    },
  );

  it.each([
    [PLAN_STATE, FAILED_STATE],
    [FETCH_PAGE_STATE, CHAIN_FAILED_STATE],
  ])('%s never retries fatal errors and sends them, and anything left after retries, to %s', (name, fail) => {
    const task = functionTasks[name]!;
    const retried = (task.Retry as { ErrorEquals: string[] }[]).flatMap((r) => r.ErrorEquals);
    for (const fatal of FATAL_ERRORS) expect(retried).not.toContain(fatal);
    expect(retried).not.toContain('States.ALL');
    expect(task.Catch).toEqual([
      { ErrorEquals: [...FATAL_ERRORS], ResultPath: '$.error', Next: fail },
      { ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: fail },
    ]);
    expect(functionTasks[PLAN_STATE]!.Retry).toEqual(functionTasks[FETCH_PAGE_STATE]!.Retry);
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
    // The iteration limit is the function's (MAX_ITERATIONS_PER_EXECUTION), not the definition's.
    expect(definition).toEqual(JSON.parse(definitionString));
    expect(JSON.stringify(definition)).not.toMatch(/Fn::|"Ref"|\$\{Token/);
  });

  it('passes asl-validator', () => {
    const result = validator(definition);
    expect(result.errorsText()).toBe('');
    expect(result.isValid).toBe(true);
  });

  it("is JSONPath with a TimeoutSeconds on every task, the Map's included (the local runner needs both)", () => {
    const states = (definition as Graph).States;
    const inner = (states[CHAINS_MAP_STATE] as State & { ItemProcessor: Graph }).ItemProcessor.States;
    expect(definition).not.toHaveProperty('QueryLanguage', 'JSONata');
    for (const state of [...Object.values(states), ...Object.values(inner)]) {
      if (state.Type === 'Task') expect(state.TimeoutSeconds).toEqual(expect.any(Number));
    }
    expect(Object.keys(states).sort()).toEqual(
      [
        PLAN_STATE,
        PLANNED_CHOICE_STATE,
        CHAINS_MAP_STATE,
        REPLAN_STATE,
        CONTINUE_AS_NEW_STATE,
        CONTINUED_STATE,
        SUCCEEDED_STATE,
        FAILED_STATE,
      ].sort(),
    );
    // State names are unique across the whole definition, iterations included.
    expect(Object.keys(inner).filter((n) => n in states)).toEqual([]);
  });

  it('rejects an iteration limit that would leave too little history for retries', () => {
    // 2500 iterations are about 22,500 of the 25,000 events: a few retried pages overflow it.
    expect(() =>
      synthesizeDefinition({ migrationsDir: FIXTURE_MIGRATIONS, maxIterationsPerExecution: 2500 }),
    ).toThrow(/Invalid IngestionStack props:[\s\S]*at maxIterationsPerExecution/);
    // The bound is shared/config.ts's, read by the context too (not declared again in infra/).
    expect(() => parseContext({ maxIterationsPerExecution: '2001' })).toThrow(
      /Invalid CDK context:[\s\S]*at maxIterationsPerExecution/,
    );
  });
});

import { ArnFormat, type CfnElement, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { DB_ERROR_CLASSES } from '#shared/db/errors.ts';
import { type DataSyncErrorClass, ERROR_CLASSES, errorKinds } from '#shared/errors.ts';

/** State names are a contract: the local runner maps task states to in-process handlers by name. */
export const PLAN_STATE = 'Plan';
export const PLANNED_CHOICE_STATE = 'Planned?';
export const CHAINS_MAP_STATE = 'Chains';
export const REPLAN_STATE = 'Replan';
export const FETCH_PAGE_STATE = 'FetchPage';
export const CHAIN_DONE_CHOICE_STATE = 'ChainDone?';
export const WAIT_STATE = 'Wait';
export const CHAIN_ENDED_STATE = 'ChainEnded';
export const CHAIN_PAUSED_STATE = 'ChainPaused';
export const CHAIN_FAILED_STATE = 'ChainFailed';
export const CONTINUE_AS_NEW_STATE = 'ContinueAsNew';
export const SUCCEEDED_STATE = 'Succeeded';
export const CONTINUED_STATE = 'ContinuedAsNew';
export const FAILED_STATE = 'Failed';

/** The task states that invoke the fetch-page function (Plan with `action: 'plan'`). */
export const FUNCTION_TASK_STATES = [PLAN_STATE, FETCH_PAGE_STATE] as const;

/**
 * Every named error the fetch-page function throws: this module's classes plus the database
 * layer's. The Retry and Catch lists below are derived from each class's `transient` flag.
 */
export const FUNCTION_ERROR_CLASSES: readonly DataSyncErrorClass[] = [...ERROR_CLASSES, ...DB_ERROR_CLASSES];

const FUNCTION_ERRORS = errorKinds(FUNCTION_ERROR_CLASSES);

/** Errors the fetch-page function throws that another attempt can cure. */
export const TRANSIENT_ERRORS: readonly string[] = FUNCTION_ERRORS.filter((e) => e.transient).map(
  (e) => e.name,
);

/** Errors no retry can cure: the execution fails at once with the function's message as the cause. */
export const FATAL_ERRORS: readonly string[] = FUNCTION_ERRORS.filter((e) => !e.transient).map((e) => e.name);

/**
 * How Step Functions reports an invocation that ended without the function throwing: a function
 * timeout or out-of-memory is `Sandbox.Timedout` or `Lambda.Unknown`, a task over its own
 * TimeoutSeconds is `States.Timeout`. A page is one transaction, so running it again is safe.
 */
export const INVOCATION_LOST_ERRORS = ['Lambda.Unknown', 'Sandbox.Timedout', 'States.Timeout'] as const;

/**
 * Lambda service faults. CDK's default retry covers the first four, but not throttling, which a
 * reserved concurrency of 1 makes likely when an operator invokes the function by hand.
 */
export const LAMBDA_SERVICE_ERRORS = [
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.ClientExecutionTimeoutException',
  'Lambda.TooManyRequestsException',
] as const;

/**
 * Lambda's own answers about the function's execution environment, not about the code: a VPC
 * function idle for weeks goes inactive and its first invoke says ResourceNotReadyException
 * ("wait and try again") while Lambda recreates its network interfaces; EC2 throttling, the ENI
 * limit and EC2 faults come from that same recreation, and ResourceConflictException from a
 * function still being updated by a deploy. Each clears within minutes: 10 s, then 20, 40, 80 and
 * 160 s (about 5 minutes in all) before the catch-all fails the execution.
 */
export const LAMBDA_ENVIRONMENT_ERRORS = [
  'Lambda.ResourceNotReadyException',
  'Lambda.EC2ThrottledException',
  'Lambda.ENILimitReachedException',
  'Lambda.EC2UnexpectedException',
  'Lambda.ResourceConflictException',
] as const;

/**
 * The continue-as-new child's execution name, derived from the parent's id alone: 'continued-'
 * plus 40 hex digits, within the 80 characters and the characters an execution name allows.
 */
export const CHILD_EXECUTION_NAME = "States.Format('continued-{}', States.Hash($$.Execution.Id, 'SHA-1'))";

/** What the optimized StartExecution integration reports when the name is already taken. */
export const EXECUTION_ALREADY_EXISTS = 'StepFunctions.ExecutionAlreadyExistsException';

/** The default state machine name: the stack's name (letters, digits, '-') within the 80-character limit. */
export function defaultStateMachineName(stackName: string): string {
  return `${stackName.slice(0, 80 - '-ingestion'.length)}-ingestion`;
}

/** Where the Map puts `{round: 1}` for Replan (its own result, every iteration's last state, is dropped). */
export const REPLAN_PATH = '$.replan';

/**
 * The Replan state's expression: this execution's own input plus `round: 1`. The input's
 * `parentExecutionId` is absent on an execution an operator started, and a JSONPath
 * `"parentExecutionId.$"` that selects nothing fails the state (States.Runtime), so the input is
 * merged whole. `{round: 1}` comes from a path, not a literal: a literal object would need
 * escaped braces, which Step Functions requires and the local interpreter does not unescape.
 */
export const REPLAN_STATE_EXPRESSION = `States.JsonMerge($$.Execution.Input, ${REPLAN_PATH}, false)`;

/** Props of {@link IngestStateMachine}. */
export interface IngestStateMachineProps {
  /** The fetch-page function: it plans the chains (`action: 'plan'`) and fetches their pages. */
  readonly fetchPage: lambda.IFunction;
  /** How long one Plan or FetchPage task may run, at least the function's own timeout. */
  readonly taskTimeout: Duration;
  /**
   * The state machine's name; its own ARN is built from it for the continue-as-new grant, and its
   * log group is named after it. Derived from the stack, so a second stack in a region does not collide.
   * @default '<stack name>-ingestion'
   */
  readonly stateMachineName?: string;
  /** Overall execution timeout. @default Duration.hours(24) */
  readonly executionTimeout?: Duration;
  /** @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * The ingestion workflow:
 *
 *     Plan -> Planned? -> done: Succeeded
 *                      -> round >= 1: ContinueAsNew
 *                      -> Chains (Map over $.chains, all at once):
 *                           FetchPage -> ChainDone? -> done: ChainEnded
 *                                                   -> iteration >= perChainCap: ChainPaused
 *                                                   -> Wait -> FetchPage
 *                         -> Replan -> Plan
 *
 * Every Map iteration's events count in this execution's history (25,000 at most), so the
 * per-chain cap is not a constant here: Plan divides the function's MAX_ITERATIONS_PER_EXECUTION
 * by the number of chains. One Map round per execution: the second Plan (round 1) either ends
 * the job or continues as new. The function paces itself and says how long to wait; the state
 * machine owns retries, the history-size limit and failing loudly on fatal errors.
 */
export class IngestStateMachine extends Construct {
  readonly stateMachine: sfn.StateMachine;
  readonly logGroup: logs.LogGroup;
  readonly stateMachineName: string;

  constructor(scope: Construct, id: string, props: IngestStateMachineProps) {
    super(scope, id);
    this.stateMachineName = props.stateMachineName ?? defaultStateMachineName(Stack.of(this).stackName);

    const failed = new sfn.Fail(this, FAILED_STATE, {
      stateName: FAILED_STATE,
      errorPath: '$.error.Error',
      causePath: '$.error.Cause',
    });
    // A Map iteration's states cannot name a state outside it: a failed chain ends its iteration
    // here, which fails the Map with the same error, which the Map sends on to Failed.
    const chainFailed = new sfn.Fail(this, CHAIN_FAILED_STATE, {
      stateName: CHAIN_FAILED_STATE,
      errorPath: '$.error.Error',
      causePath: '$.error.Cause',
    });

    const invokeFunction = (stateName: string, payload: Record<string, unknown>, onFailure: sfn.IChainable) =>
      new tasks.LambdaInvoke(this, stateName, {
        stateName,
        lambdaFunction: props.fetchPage,
        payloadResponseOnly: true,
        payload: sfn.TaskInput.fromObject(payload),
        taskTimeout: sfn.Timeout.duration(props.taskTimeout),
        // Our own retriers below: the CDK default misses Lambda.TooManyRequestsException.
        retryOnServiceExceptions: false,
      })
        .addRetry({
          errors: [...LAMBDA_SERVICE_ERRORS],
          interval: Duration.seconds(2),
          maxAttempts: 6,
          backoffRate: 2,
          maxDelay: Duration.seconds(60),
          jitterStrategy: sfn.JitterType.FULL,
        })
        .addRetry({
          errors: [...LAMBDA_ENVIRONMENT_ERRORS],
          interval: Duration.seconds(10),
          maxAttempts: 6,
          backoffRate: 2,
          jitterStrategy: sfn.JitterType.FULL,
        })
        .addRetry({
          errors: [...INVOCATION_LOST_ERRORS],
          interval: Duration.seconds(5),
          maxAttempts: 4,
          backoffRate: 2,
          maxDelay: Duration.seconds(60),
          jitterStrategy: sfn.JitterType.FULL,
        })
        .addRetry({
          errors: [...TRANSIENT_ERRORS],
          interval: Duration.seconds(5),
          maxAttempts: 8,
          backoffRate: 2,
          maxDelay: Duration.seconds(120),
          jitterStrategy: sfn.JitterType.FULL,
        })
        .addCatch(onFailure, { errors: [...FATAL_ERRORS], resultPath: '$.error' })
        .addCatch(onFailure, { errors: [sfn.Errors.ALL], resultPath: '$.error' });

    const plan = invokeFunction(
      PLAN_STATE,
      {
        executionId: sfn.JsonPath.stringAt('$$.Execution.Id'),
        action: 'plan',
        state: sfn.JsonPath.entirePayload,
      },
      failed,
    );
    // The state carries the chain (and the per-chain cap) from the Map item, then from each output.
    const fetchPage = invokeFunction(
      FETCH_PAGE_STATE,
      { executionId: sfn.JsonPath.stringAt('$$.Execution.Id'), state: sfn.JsonPath.entirePayload },
      chainFailed,
    );

    const continued = new sfn.Succeed(this, CONTINUED_STATE, { stateName: CONTINUED_STATE });
    // $$.StateMachine.Id is this state machine's ARN at run time: no circular reference to the
    // construct, and the local runner fills it in the same way.
    const continueAsNew = new sfn.CustomState(this, CONTINUE_AS_NEW_STATE, {
      stateJson: {
        Type: 'Task',
        Resource: `arn:${Stack.of(this).partition}:states:::states:startExecution`,
        Parameters: {
          'StateMachineArn.$': '$$.StateMachine.Id',
          // The same name on every attempt of this state: a retried start whose first attempt
          // did start the child returns that child (same name and input) instead of a second one.
          'Name.$': CHILD_EXECUTION_NAME,
          Input: {
            'sourceId.$': '$.sourceId',
            'parentExecutionId.$': '$$.Execution.Id',
            // Links the child to its parent in the console and in the history.
            'AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID.$': '$$.Execution.Id',
          },
        },
        TimeoutSeconds: 60,
      },
    })
      // Once the child has ended, its name is taken whatever the input: the child ran, so this
      // execution's work is handed over all the same.
      .addRetry({ errors: [EXECUTION_ALREADY_EXISTS], maxAttempts: 0 })
      .addRetry({
        errors: [sfn.Errors.ALL],
        interval: Duration.seconds(2),
        maxAttempts: 3,
        backoffRate: 2,
        jitterStrategy: sfn.JitterType.FULL,
      })
      .addCatch(continued, { errors: [EXECUTION_ALREADY_EXISTS] })
      .addCatch(failed, { errors: [sfn.Errors.ALL], resultPath: '$.error' });

    const wait = new sfn.Wait(this, WAIT_STATE, {
      stateName: WAIT_STATE,
      time: sfn.WaitTime.secondsPath('$.waitSeconds'),
    });

    const chainDone = new sfn.Choice(this, CHAIN_DONE_CHOICE_STATE, { stateName: CHAIN_DONE_CHOICE_STATE })
      .when(
        sfn.Condition.booleanEquals('$.done', true),
        new sfn.Succeed(this, CHAIN_ENDED_STATE, { stateName: CHAIN_ENDED_STATE }),
      )
      .when(
        // The step echoes its chain's cap in every output, so the comparison is path to path.
        sfn.Condition.numberGreaterThanEqualsJsonPath('$.iteration', '$.perChainCap'),
        new sfn.Succeed(this, CHAIN_PAUSED_STATE, { stateName: CHAIN_PAUSED_STATE }),
      )
      .otherwise(wait.next(fetchPage));

    // Each item is the whole input of its chain's first FetchPage, built by Plan:
    // {sourceId, chain, parentExecutionId?, iteration: 0, perChainCap}. No ItemSelector: one
    // that named the optional parentExecutionId would fail when it is absent.
    const chains = new sfn.Map(this, CHAINS_MAP_STATE, {
      stateName: CHAINS_MAP_STATE,
      itemsPath: '$.chains',
      // Plan starts at most 10 chains, and they must all run at once: a chain held back by the
      // concurrency limit would only start when another ends.
      maxConcurrency: 0,
      // The chains report through the database: the Map's result (every iteration's last state)
      // is replaced with the one field Replan adds to the execution input.
      resultSelector: { round: 1 },
      resultPath: REPLAN_PATH,
    })
      .itemProcessor(fetchPage.next(chainDone))
      .addCatch(failed, { errors: [sfn.Errors.ALL], resultPath: '$.error' });

    const replan = new sfn.Pass(this, REPLAN_STATE, {
      stateName: REPLAN_STATE,
      parameters: { 'state.$': REPLAN_STATE_EXPRESSION },
      outputPath: '$.state',
    });

    const planned = new sfn.Choice(this, PLANNED_CHOICE_STATE, { stateName: PLANNED_CHOICE_STATE })
      .when(
        sfn.Condition.booleanEquals('$.done', true),
        new sfn.Succeed(this, SUCCEEDED_STATE, { stateName: SUCCEEDED_STATE }),
      )
      .when(sfn.Condition.numberGreaterThanEquals('$.round', 1), continueAsNew.next(continued))
      .otherwise(chains.next(replan).next(plan));

    this.logGroup = new logs.LogGroup(this, 'Logs', {
      // Vended-log groups for Step Functions must start with /aws/vendedlogs/ to avoid the
      // resource-policy size limit.
      logGroupName: `/aws/vendedlogs/states/${this.stateMachineName}`,
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      stateMachineName: this.stateMachineName,
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromChainable(plan.next(planned)),
      timeout: props.executionTimeout ?? Duration.hours(24),
      tracingEnabled: true,
      logs: { destination: this.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
    });
    const selfArn = Stack.of(this).formatArn({
      service: 'states',
      resource: 'stateMachine',
      resourceName: this.stateMachineName,
      arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({ actions: ['states:StartExecution'], resources: [selfArn] }),
    );
    const policy = this.stateMachine.role.node.tryFindChild('DefaultPolicy');
    if (policy) {
      Validations.of(policy).acknowledge(
        {
          id: 'AwsSolutions-IAM5[Resource::*]',
          reason:
            'X-Ray PutTraceSegments/PutTelemetryRecords/GetSampling* and the CloudWatch Logs delivery actions (CreateLogDelivery, PutResourcePolicy, DescribeLogGroups...) do not support resource-level permissions.',
        },
        {
          id: `AwsSolutions-IAM5[Resource::<${Stack.of(this).getLogicalId(props.fetchPage.node.defaultChild as CfnElement)}.Arn>:*]`,
          reason:
            'lambda:InvokeFunction on the fetch-page function and its versions/aliases only (CDK grants "<arn>:*" for qualified invocations).',
        },
      );
    }
  }
}

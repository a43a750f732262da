import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

/** Props of {@link IngestAlarms}. */
export interface IngestAlarmsProps {
  readonly stateMachine: sfn.IStateMachine;
  /** Namespace of the fetch-page function's EMF metrics. @default 'DataSyncIngest' */
  readonly metricsNamespace?: string;
  /** The `service` dimension Powertools adds to every metric. @default 'fetch-page' */
  readonly serviceName?: string;
  /** Rejected rows (events that could not be normalised) per hour that raise the alarm. @default 1 */
  readonly rejectedEventsThreshold?: number;
  /** Where alarm state changes are sent. @default - no action: the alarms show in the console only */
  readonly alarmTopic?: sns.ITopic;
  /** The fetch-page function: a stall is invocations of it that store no page. */
  readonly fetchPage: lambda.IFunction;
  /** Every function of the stack: their errors together raise one alarm. */
  readonly functions: readonly lambda.IFunction[];
  /**
   * Errors over all functions in 15 minutes that raise the alarm. Transient errors (a 503, a
   * database resuming) are retried by the state machine and a few are normal. @default 5
   */
  readonly functionErrorsThreshold?: number;
}

/** A stall: fetch-page ran in each of this many consecutive periods and stored no page in any. */
export const STALL_PERIOD = Duration.minutes(15);

/**
 * The signals an operator must hear about: an execution that failed, timed out or was aborted,
 * rows the upstream sent that could not be stored as events, a run that stalled (fetch-page
 * invoked without storing pages) and errors of any function.
 */
export class IngestAlarms extends Construct {
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: IngestAlarmsProps) {
    super(scope, id);
    const sm = props.stateMachine;
    const executionAlarm = (name: string, metric: cloudwatch.Metric, description: string) =>
      new cloudwatch.Alarm(this, name, {
        metric,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      });
    const period = Duration.minutes(5);
    this.alarms.push(
      executionAlarm(
        'ExecutionsFailed',
        sm.metricFailed({ period, statistic: 'Sum' }),
        'An ingestion execution failed: read its Failed state error and cause, fix it, and start again (the checkpoint resumes).',
      ),
      executionAlarm(
        'ExecutionsTimedOut',
        sm.metricTimedOut({ period, statistic: 'Sum' }),
        'An ingestion execution hit its overall timeout: start again to resume from the checkpoint, or raise executionTimeout.',
      ),
      executionAlarm(
        'ExecutionsAborted',
        sm.metricAborted({ period, statistic: 'Sum' }),
        'An ingestion execution was stopped: if that was not intended, start again to resume from the checkpoint.',
      ),
      new cloudwatch.Alarm(this, 'EventsRejected', {
        metric: new cloudwatch.Metric({
          namespace: props.metricsNamespace ?? 'DataSyncIngest',
          metricName: 'EventsRejected',
          dimensionsMap: { service: props.serviceName ?? 'fetch-page' },
          statistic: 'Sum',
          period: Duration.hours(1),
        }),
        threshold: props.rejectedEventsThreshold ?? 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription:
          'The upstream sent events that could not be normalised; they are kept in rejected_events with the reason: inspect them.',
      }),
    );
    const pages = new cloudwatch.Metric({
      namespace: props.metricsNamespace ?? 'DataSyncIngest',
      metricName: 'Pages',
      dimensionsMap: { service: props.serviceName ?? 'fetch-page' },
      statistic: 'Sum',
      period: STALL_PERIOD,
    });
    this.alarms.push(
      new cloudwatch.Alarm(this, 'Stalled', {
        // 1 when fetch-page was invoked and no page was stored (missing Pages is 0 pages).
        metric: new cloudwatch.MathExpression({
          expression: 'IF(invocations > 0 AND FILL(pages, 0) == 0, 1, 0)',
          usingMetrics: {
            invocations: props.fetchPage.metricInvocations({ period: STALL_PERIOD, statistic: 'Sum' }),
            pages,
          },
          period: STALL_PERIOD,
          label: 'fetch-page ran but stored no page',
        }),
        threshold: 1,
        evaluationPeriods: 2,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription:
          'Ingestion stalled: fetch-page kept running for 30 minutes without storing a page (rate limited without end, a lease held, the upstream failing). Run npm run ingest -- status and read the fetch-page log.',
      }),
      new cloudwatch.Alarm(this, 'FunctionErrors', {
        metric: new cloudwatch.MathExpression({
          expression: props.functions.map((_, i) => `FILL(e${i}, 0)`).join(' + '),
          usingMetrics: Object.fromEntries(
            props.functions.map((fn, i) => [
              `e${i}`,
              fn.metricErrors({ period: Duration.minutes(15), statistic: 'Sum' }),
            ]),
          ),
          period: Duration.minutes(15),
          label: 'function errors',
        }),
        threshold: props.functionErrorsThreshold ?? 5,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription:
          'The functions (fetch-page, migrate, status) threw errors: read their logs (errorName, errorMessage); transient ones are retried, repeated ones need a fix.',
      }),
    );
    if (props.alarmTopic) {
      const action = new actions.SnsAction(props.alarmTopic);
      for (const alarm of this.alarms) alarm.addAlarmAction(action);
    }
  }
}

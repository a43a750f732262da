import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
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
}

/**
 * The signals an operator must hear about: an execution that failed, timed out or was aborted,
 * and rows the upstream sent that could not be stored as events.
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
    if (props.alarmTopic) {
      const action = new actions.SnsAction(props.alarmTopic);
      for (const alarm of this.alarms) alarm.addAlarmAction(action);
    }
  }
}

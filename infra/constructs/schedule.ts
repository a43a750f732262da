import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import { Schedule, ScheduleExpression, ScheduleTargetInput } from 'aws-cdk-lib/aws-scheduler';
import { StepFunctionsStartExecution } from 'aws-cdk-lib/aws-scheduler-targets';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { z } from 'zod';
import { CONFIG_ENV_NAMES, configDefaults, stepSettingsSchema } from '#shared/config.ts';
import { ConfigError } from '#shared/errors.ts';
import { sourceIdSchema } from '#shared/step/contract.ts';

/*
 * Scheduled top-ups: an EventBridge Scheduler schedule starts the state machine with the
 * source's input. A complete source is topped up (shared/step/topup.ts); a start that finds the
 * source still being read ends quietly (`ifRunning: skip`: the Plan task returns done, the
 * execution succeeds, no alarm fires).
 *
 * Default `rate(6 hours)`, against cost: a top-up that finds nothing new is one request, one
 * invocation and six state transitions (a fraction of a cent a month). What costs is the
 * database: an auto-paused Aurora Serverless v2 cluster (0 ACU idle) wakes for each top-up and
 * pauses again after its idle timeout (5 minutes at least), about 6.5 minutes at 0.5 ACU a
 * start (infra/cost.ts prices it): every 6 hours that is about $0.79 a month and keeps the
 * default stack's idle month under $12; hourly would be $4.75 (over it), every 5 minutes keeps
 * the database awake for good (about $44). A provisioned instance costs the same either way.
 * Events are then at most 6 hours (plus the lookback) late; `-c schedule="rate(1 hour)"` buys
 * fresher data for the $4.75.
 */

/** A Scheduler expression: rate(N unit), cron(6 fields), or none (no schedule). */
const expressionSchema = z
  .string()
  .trim()
  .refine(
    (v) =>
      v === 'none' ||
      /^rate\(\d+ (minute|minutes|hour|hours|day|days)\)$/.test(v) ||
      /^cron\((\S+ ){5}\S+\)$/.test(v),
    {
      error:
        'must be rate(N minute[s]|hour[s]|day[s]), cron(min hour day-of-month month day-of-week year), or none, e.g. -c schedule="rate(1 hour)"',
    },
  );

/** `15m`, `900s`, `1h` or a number of milliseconds: the span of instants a top-up reads again below the mark. */
const lookbackSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(String(v).trim());
  const ms = m ? Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms'] ?? 1) : Number.NaN;
  const ok = stepSettingsSchema.shape.lookbackMs.safeParse(ms);
  if (!ok.success) {
    ctx.addIssue({
      code: 'custom',
      message: 'must be a duration from 0 to 30 days, e.g. 15m, 1h or 900000 (ms)',
    });
    return z.NEVER;
  }
  return ms;
});

export const scheduleContextSchema = z.object({
  schedule: expressionSchema.default('rate(6 hours)'),
  scheduleSource: sourceIdSchema.default('default'),
  lookback: lookbackSchema.optional(),
});

/** Props of {@link IngestSchedule}. */
export interface IngestScheduleProps {
  readonly stateMachine: sfn.IStateMachine;
  /** The fetch-page function: it is told the lookback (TOPUP_LOOKBACK_MS). */
  readonly fetchPage: lambda.Function;
  /** Scheduler expression, or `none` for no schedule. @default 'rate(6 hours)' */
  readonly expression?: string;
  /** The source the schedule tops up. @default 'default' */
  readonly sourceId?: string;
  /** How far below the high-water mark a top-up reads again. @default 900000 (15 minutes) */
  readonly lookbackMs?: number;
}

export class IngestSchedule extends Construct {
  /** Undefined with `expression: 'none'`. */
  readonly schedule?: Schedule;

  /** The schedule as `-c schedule=...`, `-c scheduleSource=...`, `-c lookback=...` say (validated here). */
  static fromContext(
    scope: Construct,
    props: Pick<IngestScheduleProps, 'stateMachine' | 'fetchPage'>,
  ): IngestSchedule {
    const raw = Object.fromEntries(
      Object.keys(scheduleContextSchema.shape).map((k) => [k, scope.node.tryGetContext(k)]),
    );
    const parsed = scheduleContextSchema.safeParse(raw);
    if (!parsed.success) {
      throw new ConfigError(
        `Invalid CDK context:\n${z.prettifyError(parsed.error)}\nFix the value passed with -c key=value or in cdk.json "context".`,
      );
    }
    const c = parsed.data;
    return new IngestSchedule(scope, 'TopUpSchedule', {
      ...props,
      expression: c.schedule,
      sourceId: c.scheduleSource,
      ...(c.lookback !== undefined ? { lookbackMs: c.lookback } : {}),
    });
  }

  constructor(scope: Construct, id: string, props: IngestScheduleProps) {
    super(scope, id);
    const expression = expressionSchema.parse(props.expression ?? 'rate(6 hours)');
    const sourceId = sourceIdSchema.parse(props.sourceId ?? 'default');
    const lookbackMs = props.lookbackMs ?? configDefaults.lookbackMs;
    props.fetchPage.addEnvironment(CONFIG_ENV_NAMES.lookbackMs, String(lookbackMs));
    if (expression === 'none') return;
    this.schedule = new Schedule(this, 'Schedule', {
      description: `Tops up source "${sourceId}" (a start that finds it running ends quietly)`,
      schedule: ScheduleExpression.expression(expression),
      target: new StepFunctionsStartExecution(props.stateMachine, {
        input: ScheduleTargetInput.fromObject({ sourceId, ifRunning: 'skip' }),
        // A start missed for an hour is replaced by the next one: no backlog of starts.
        maxEventAge: Duration.hours(1),
        retryAttempts: 3,
      }),
    });
  }
}

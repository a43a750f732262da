import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { applyProfile, stackPropsFromContext } from './app.ts';
import { parseContext } from './config.ts';
import { IngestionStack, PROJECT_ROOT } from './ingestion-stack.ts';

/*
 * What a synthesized template costs while nothing runs, priced resource by resource from the
 * template itself (`npm run cost` reads cdk.out), and what one full run adds. us-east-1 list
 * prices; free tiers are left out on purpose (an account may have used them up).
 */

const HOURS_PER_MONTH = 730;

/** us-east-1 list prices in USD. */
export const PRICES = {
  natGatewayHour: 0.045,
  natGatewayGb: 0.045,
  publicIpv4Hour: 0.005,
  instanceHour: { 't4g.nano': 0.0042, 't4g.micro': 0.0084, 't4g.small': 0.0168 } as Record<string, number>,
  /** gp3 per GB-month (EC2 root volumes). */
  ebsGp3GbMonth: 0.08,
  interfaceEndpointHour: 0.01,
  rdsInstanceHour: { 'db.t4g.micro': 0.016, 'db.t4g.small': 0.032, 'db.t4g.medium': 0.065 } as Record<
    string,
    number
  >,
  rdsGp3GbMonth: 0.115,
  auroraAcuHour: 0.12,
  auroraStorageGbMonth: 0.1,
  auroraIoPerMillion: 0.2,
  secretMonth: 0.4,
  alarmMetricMonth: 0.1,
  dashboardMonth: 3,
  schedulerPerMillion: 1,
  lambdaArmGbSecond: 0.0000133334,
  lambdaPerMillionRequests: 0.2,
  stepFunctionsPerThousandTransitions: 0.025,
} as const;

/** What the template does not say, stated once. */
export const ASSUMPTIONS = {
  /** Amazon Linux 2023's root volume, which the NAT instance keeps. */
  natInstanceRootGb: 8,
  /** What 3,000,000 events take stored, indexes included (docs/benchmarks.md). */
  storedGb: 2,
  /** One full run (docs/benchmarks.md, three chains): invocations, seconds each, transitions, hours. */
  run: { invocations: 768, secondsEach: 5, memoryGb: 0.5, transitions: 2320, hours: 1, gbThroughNat: 1.7 },
  /**
   * What one scheduled top-up keeps a paused Aurora awake: the top-up itself, the roles' idle
   * session timeout (1 minute) and Aurora's pause delay (5 minutes), at its 0.5-ACU floor once awake.
   */
  wakePerStart: { hours: 6.5 / 60, acu: 0.5 },
  /** Aurora during a run: average capacity and I/O requests (a COPY of 5000 rows per page). */
  auroraRun: { averageAcu: 1, ioMillions: 1 },
} as const;

export interface CostRow {
  item: string;
  arithmetic: string;
  monthly: number;
}

type Resource = { Type: string; Properties?: Record<string, unknown> };
export type CfnTemplate = { Resources: Record<string, Resource> };

const money = (n: number) => n.toFixed(2);
const ofType = (t: CfnTemplate, type: string) =>
  Object.entries(t.Resources).filter(([, r]) => r.Type === type) as [
    string,
    Resource & { Properties: Record<string, unknown> },
  ][];

/** A public subnet of the template: one whose instances get a public IPv4 address. */
function isPublicSubnet(t: CfnTemplate, ref: unknown): boolean {
  const id = (ref as { Ref?: string } | undefined)?.Ref;
  return !!id && t.Resources[id]?.Properties?.MapPublicIpOnLaunch === true;
}

/** The resources of `template` that cost money by the hour or the month while idle. */
export function idleCost(template: CfnTemplate): { rows: CostRow[]; total: number } {
  const rows: CostRow[] = [];
  const add = (item: string, arithmetic: string, monthly: number) => rows.push({ item, arithmetic, monthly });
  const h = HOURS_PER_MONTH;

  for (const _ of ofType(template, 'AWS::EC2::NatGateway')) {
    add('NAT gateway', `${h} h x $${PRICES.natGatewayHour}`, h * PRICES.natGatewayHour);
  }
  for (const _ of ofType(template, 'AWS::EC2::EIP')) {
    add('Elastic IP (public IPv4)', `${h} h x $${PRICES.publicIpv4Hour}`, h * PRICES.publicIpv4Hour);
  }
  for (const [, r] of ofType(template, 'AWS::EC2::Instance')) {
    const type = String(r.Properties.InstanceType);
    const hourly = PRICES.instanceHour[type];
    if (hourly === undefined) throw new Error(`no price for EC2 ${type}: add it to PRICES.instanceHour`);
    add(`EC2 ${type} (NAT instance)`, `${h} h x $${hourly}`, h * hourly);
    const gb = ASSUMPTIONS.natInstanceRootGb;
    add('its root volume (gp3)', `${gb} GB x $${PRICES.ebsGp3GbMonth}`, gb * PRICES.ebsGp3GbMonth);
    if (isPublicSubnet(template, r.Properties.SubnetId)) {
      add('its public IPv4 address', `${h} h x $${PRICES.publicIpv4Hour}`, h * PRICES.publicIpv4Hour);
    }
  }
  for (const [, r] of ofType(template, 'AWS::EC2::VPCEndpoint')) {
    if (r.Properties.VpcEndpointType !== 'Interface') continue;
    const azs = (r.Properties.SubnetIds as unknown[]).length;
    add(
      'Interface endpoint',
      `${azs} AZs x ${h} h x $${PRICES.interfaceEndpointHour}`,
      azs * h * PRICES.interfaceEndpointHour,
    );
  }
  for (const [, r] of ofType(template, 'AWS::RDS::DBInstance')) {
    const cls = String(r.Properties.DBInstanceClass);
    if (cls === 'db.serverless') continue; // priced with its cluster
    const hourly = PRICES.rdsInstanceHour[cls];
    if (hourly === undefined) throw new Error(`no price for RDS ${cls}: add it to PRICES.rdsInstanceHour`);
    const multiAz = r.Properties.MultiAZ === true ? 2 : 1;
    add(
      `RDS ${cls}${multiAz > 1 ? ' Multi-AZ' : ''}`,
      `${multiAz > 1 ? '2 x ' : ''}${h} h x $${hourly}`,
      multiAz * h * hourly,
    );
    const gb = Number(r.Properties.AllocatedStorage ?? 0);
    add('its gp3 storage', `${gb} GB x $${PRICES.rdsGp3GbMonth}`, gb * PRICES.rdsGp3GbMonth);
  }
  for (const [, r] of ofType(template, 'AWS::RDS::DBCluster')) {
    const scaling = r.Properties.ServerlessV2ScalingConfiguration as { MinCapacity?: number } | undefined;
    const min = scaling?.MinCapacity ?? 0;
    const writers = ofType(template, 'AWS::RDS::DBInstance').filter(
      ([, i]) => i.Properties.DBInstanceClass === 'db.serverless',
    ).length;
    add(
      min === 0 ? 'Aurora Serverless v2, paused (0 ACUs)' : `Aurora Serverless v2 at ${min} ACUs`,
      `${writers} x ${min} ACU x ${h} h x $${PRICES.auroraAcuHour}`,
      writers * min * h * PRICES.auroraAcuHour,
    );
    const gb = ASSUMPTIONS.storedGb;
    add(
      'its storage (3M events)',
      `${gb} GB x $${PRICES.auroraStorageGbMonth}`,
      gb * PRICES.auroraStorageGbMonth,
    );
  }
  const secrets = ofType(template, 'AWS::SecretsManager::Secret').length;
  if (secrets)
    add('Secrets Manager', `${secrets} secrets x $${PRICES.secretMonth}`, secrets * PRICES.secretMonth);
  let alarmMetrics = 0;
  const alarms = ofType(template, 'AWS::CloudWatch::Alarm');
  for (const [, r] of alarms) {
    const metrics = r.Properties.Metrics as { MetricStat?: unknown }[] | undefined;
    alarmMetrics += metrics ? metrics.filter((m) => m.MetricStat).length : 1;
  }
  if (alarms.length) {
    add(
      'CloudWatch alarms',
      `${alarms.length} alarms, ${alarmMetrics} metrics x $${PRICES.alarmMetricMonth}`,
      alarmMetrics * PRICES.alarmMetricMonth,
    );
  }
  const dashboards = ofType(template, 'AWS::CloudWatch::Dashboard').length;
  if (dashboards)
    add(
      'CloudWatch dashboard',
      `${dashboards} x $${PRICES.dashboardMonth}`,
      dashboards * PRICES.dashboardMonth,
    );
  const serverless = ofType(template, 'AWS::RDS::DBCluster').length > 0;
  for (const [, r] of ofType(template, 'AWS::Scheduler::Schedule')) {
    const perMonth = invocationsPerMonth(String(r.Properties.ScheduleExpression));
    add(
      `EventBridge schedule (${r.Properties.ScheduleExpression})`,
      `${perMonth} invocations x $${PRICES.schedulerPerMillion}/M`,
      (perMonth / 1e6) * PRICES.schedulerPerMillion,
    );
    if (serverless) {
      const w = ASSUMPTIONS.wakePerStart;
      add(
        'Aurora woken by each scheduled top-up',
        `${perMonth} x ${(w.hours * 60).toFixed(1)} min x ${w.acu} ACU x $${PRICES.auroraAcuHour}`,
        perMonth * w.hours * w.acu * PRICES.auroraAcuHour,
      );
    }
  }
  const total = rows.reduce((sum, r) => sum + r.monthly, 0);
  return { rows, total };
}

/** Invocations a month of a `rate(...)` or `cron(...)` expression (a cron counts once a day). */
function invocationsPerMonth(expression: string): number {
  const rate = /^rate\((\d+)\s+(minute|hour|day)s?\)$/.exec(expression);
  if (rate) {
    const minutes = { minute: 1, hour: 60, day: 1440 }[rate[2] as 'minute' | 'hour' | 'day'];
    return Math.round((HOURS_PER_MONTH * 60) / (Number(rate[1]) * minutes));
  }
  return 30;
}

/** What one full run of 3,000,000 events adds, by what the template runs it on. */
export function runCost(template: CfnTemplate): { rows: CostRow[]; total: number } {
  const rows: CostRow[] = [];
  const r = ASSUMPTIONS.run;
  const gbSeconds = r.invocations * r.secondsEach * r.memoryGb;
  rows.push({
    item: 'Lambda',
    arithmetic: `${r.invocations} x ${r.secondsEach} s x ${r.memoryGb} GB x $${PRICES.lambdaArmGbSecond}`,
    monthly: gbSeconds * PRICES.lambdaArmGbSecond + (r.invocations / 1e6) * PRICES.lambdaPerMillionRequests,
  });
  rows.push({
    item: 'Step Functions',
    arithmetic: `${r.transitions} transitions x $${PRICES.stepFunctionsPerThousandTransitions}/1000`,
    monthly: (r.transitions / 1000) * PRICES.stepFunctionsPerThousandTransitions,
  });
  if (ofType(template, 'AWS::EC2::NatGateway').length) {
    rows.push({
      item: 'NAT gateway data',
      arithmetic: `${r.gbThroughNat} GB x $${PRICES.natGatewayGb}`,
      monthly: r.gbThroughNat * PRICES.natGatewayGb,
    });
  }
  if (ofType(template, 'AWS::RDS::DBCluster').length) {
    const a = ASSUMPTIONS.auroraRun;
    rows.push({
      item: 'Aurora capacity and I/O while running',
      arithmetic: `${r.hours} h x ${a.averageAcu} ACU x $${PRICES.auroraAcuHour} + ${a.ioMillions}M I/O x $${PRICES.auroraIoPerMillion}`,
      monthly: r.hours * a.averageAcu * PRICES.auroraAcuHour + a.ioMillions * PRICES.auroraIoPerMillion,
    });
  }
  return { rows, total: rows.reduce((sum, row) => sum + row.monthly, 0) };
}

/** A markdown table of the rows and their total. */
export function costTable(cost: { rows: CostRow[]; total: number }, unit = '$/month'): string {
  const lines = [`| Item | Arithmetic | ${unit} |`, '| --- | --- | ---: |'];
  for (const r of cost.rows) lines.push(`| ${r.item} | ${r.arithmetic} | ${money(r.monthly)} |`);
  lines.push(`| **Total** | | **${money(cost.total)}** |`);
  return lines.join('\n');
}

/** The profiles docs/deploy.md prices, with the context each is deployed with. */
export const PROFILES = [
  { name: 'default', context: {} },
  { name: 'default, no schedule', context: { schedule: 'none' } },
  { name: 'default with hourly top-ups', context: { schedule: 'rate(1 hour)' } },
  { name: 'lean', context: { profile: 'lean' } },
  {
    name: 'before (NAT gateway, endpoint, RDS instance, dashboard)',
    context: {
      egress: 'nat-gateway',
      secretsManagerEndpoint: 'true',
      database: 'instance',
      dashboard: 'true',
    },
  },
] as const;

/** The template of a profile, synthesized in memory (no bundling) for us-east-1. */
export function profileTemplate(context: Record<string, string>): CfnTemplate {
  const full = { datasyncApiUrl: 'https://datasync.invalid/api/v1', ...context };
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [], ...full } });
  const ctx = parseContext(full);
  applyProfile(app, ctx);
  const props = stackPropsFromContext(ctx);
  const stack = new IngestionStack(app, 'DataSyncIngest', {
    ...props,
    env: { account: '123456789012', region: 'us-east-1' },
  });
  return Template.fromStack(stack).toJSON() as CfnTemplate;
}

export const DOCS_BEGIN = '<!-- npm run cost -- --docs: begin (generated, do not edit) -->';
export const DOCS_END = '<!-- npm run cost -- --docs: end -->';

/** The generated block of docs/deploy.md: each profile's idle month and full run. */
export function docsCostSection(
  templateOf: (profile: (typeof PROFILES)[number]) => CfnTemplate = (p) => profileTemplate(p.context),
): string {
  const parts: string[] = [DOCS_BEGIN];
  for (const profile of PROFILES) {
    const template = templateOf(profile);
    const flags = Object.entries(profile.context)
      .map(([k, v]) => `-c ${k}=${v}`)
      .join(' ');
    parts.push(
      '',
      `**${profile.name}**${flags ? ` (\`${flags}\`)` : ''}: idle, per month`,
      '',
      costTable(idleCost(template)),
      '',
      'One full run of 3,000,000 events adds:',
      '',
      costTable(runCost(template), '$ per run'),
    );
  }
  parts.push('', DOCS_END);
  return parts.join('\n');
}

export const DEPLOY_DOC = join(PROJECT_ROOT, 'docs', 'deploy.md');

/** A markdown block without the padding a formatter adds to its tables (biome formats docs/). */
export function normaliseTables(text: string): string {
  return text
    .split('\n')
    .map((line) => (line.startsWith('|') ? line.replace(/ *\| */g, '|').replace(/-{3,}/g, '---') : line))
    .join('\n');
}

/** The block as docs/deploy.md has it now. */
export function docsCostSectionInFile(text = readFileSync(DEPLOY_DOC, 'utf8')): string | undefined {
  const begin = text.indexOf(DOCS_BEGIN);
  const end = text.indexOf(DOCS_END);
  return begin < 0 || end < 0 ? undefined : text.slice(begin, end + DOCS_END.length);
}

function main(args: string[]): void {
  if (args.includes('--docs')) {
    const text = readFileSync(DEPLOY_DOC, 'utf8');
    const current = docsCostSectionInFile(text);
    if (!current)
      throw new Error(`${DEPLOY_DOC} has no cost block: add the ${DOCS_BEGIN} and ${DOCS_END} lines`);
    writeFileSync(DEPLOY_DOC, text.replace(current, docsCostSection()));
    process.stdout.write(`cost: rewrote the cost block of ${DEPLOY_DOC} (npm run format pads its tables)\n`);
    return;
  }
  const dir = args.find((a) => !a.startsWith('-')) ?? join(PROJECT_ROOT, 'cdk.out');
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.template.json'));
  } catch {
    files = [];
  }
  if (files.length === 0) {
    process.stderr.write(
      `cost: no synthesized template in ${dir}: run npm run synth -- -c datasyncApiUrl=https://<host>/api/v1 first (with the context you deploy with).\n`,
    );
    process.exit(1);
  }
  for (const file of files) {
    const template = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CfnTemplate;
    process.stdout.write(
      `${file}: idle, per month (us-east-1 list prices)\n\n${costTable(idleCost(template))}\n\n`,
    );
    process.stdout.write(
      `one full run of 3,000,000 events\n\n${costTable(runCost(template), '$ per run')}\n\n`,
    );
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2));
}

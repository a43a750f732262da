import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { STEP_METRICS } from '#infra/constructs/dashboard.ts';
import { buildStack, onlyResource } from './support.ts';

const { template } = buildStack({ dashboard: true });
const dashboard = onlyResource(template, 'AWS::CloudWatch::Dashboard');
/** The dashboard body is an Fn::Join of JSON text and references; the text is what we check. */
const body = JSON.stringify(dashboard.resource.Properties.DashboardBody);

describe('operator dashboard', () => {
  it('uses the metric names the fetch-page step actually emits', () => {
    const stepDir = resolve(import.meta.dirname, '../../shared/step');
    const stepSource = readdirSync(stepDir)
      .filter((f) => f.endsWith('.ts'))
      .map((f) => readFileSync(join(stepDir, f), 'utf8'))
      .join('\n');
    const emitted = new Set([...stepSource.matchAll(/metrics\.add\('([A-Za-z]+)'/g)].map((m) => m[1]));
    expect(emitted.size).toBeGreaterThan(3);
    for (const name of Object.values(STEP_METRICS)) expect(emitted).toContain(name);
  });

  it('graphs events and pages per minute, 429s, rejected rows, latency and persist p50/p95', () => {
    for (const name of Object.values(STEP_METRICS)) {
      expect(body).toContain(`\\"DataSyncIngest\\",\\"${name}\\",\\"service\\",\\"fetch-page\\"`);
    }
    for (const name of [STEP_METRICS.upstreamLatencyMs, STEP_METRICS.persistMs]) {
      for (const stat of ['p50', 'p95']) {
        expect(body).toMatch(new RegExp(`${name}.{0,120}\\\\"stat\\\\":\\\\"${stat}\\\\"`));
      }
    }
    expect(body).toContain('"period\\":60');
  });

  it("graphs the function's errors and duration and the executions by status", () => {
    for (const metric of ['Errors', 'Throttles', 'Duration']) {
      expect(body).toContain(`\\"AWS/Lambda\\",\\"${metric}\\",\\"FunctionName\\"`);
    }
    for (const metric of [
      'ExecutionsStarted',
      'ExecutionsSucceeded',
      'ExecutionsFailed',
      'ExecutionsTimedOut',
      'ExecutionsAborted',
    ]) {
      expect(body).toContain(`\\"AWS/States\\",\\"${metric}\\",\\"StateMachineArn\\"`);
    }
  });

  it('is named after the stack', () => {
    expect(dashboard.resource.Properties.DashboardName).toBe('DataSyncIngest');
  });
});

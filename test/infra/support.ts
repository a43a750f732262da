import { resolve } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { IngestionStack, type IngestionStackProps } from '#infra/ingestion-stack.ts';

/** A committed one-file migrations folder, so the stack tests do not depend on the real drizzle/ output. */
export const FIXTURE_MIGRATIONS = resolve(import.meta.dirname, 'fixtures/migrations');

export const TEST_API_URL = 'https://datasync.test.example/api/v1';

/** Builds the stack in memory with bundling skipped (unit tests never run esbuild). */
export function buildStack(props: IngestionStackProps = {}, app = skipBundlingApp()) {
  const stack = new IngestionStack(app, 'DataSyncIngest', {
    datasyncApiUrl: TEST_API_URL,
    migrationsDir: FIXTURE_MIGRATIONS,
    env: { account: '123456789012', region: 'us-east-1' },
    ...props,
  });
  return { app, stack, template: Template.fromStack(stack) };
}

export function skipBundlingApp(): App {
  return new App({ context: { 'aws:cdk:bundling-stacks': [] } });
}

/** The single resource of `type`, failing clearly when there is not exactly one. */
export function onlyResource(template: Template, type: string, props?: Record<string, unknown>) {
  const found = template.findResources(type, props ? { Properties: props } : undefined);
  const entries = Object.entries(found);
  if (entries.length !== 1) throw new Error(`expected exactly one ${type}, found ${entries.length}`);
  const [logicalId, resource] = entries[0]!;
  return { logicalId, resource: resource as { Properties: Record<string, unknown> } };
}

import { defineConfig } from 'vitest/config';

/**
 * Two tiers. `unit` runs in this process alone: no PostgreSQL, no simulator, no child process
 * (test/support/unit-guard.ts fails a test that tries), so `npm run test:unit` takes seconds on
 * a machine with only Node.js. `integration` is everything else: real PostgreSQL, the simulator
 * over HTTP, the CLIs as child processes. `npm test` runs both.
 */
const UNIT = [
  'test/bench/lib.test.ts',
  'test/infra/continue-as-new.test.ts',
  'test/infra/cost.test.ts',
  'test/infra/dashboard.test.ts',
  'test/infra/docs-links.test.ts',
  'test/infra/error-registry.test.ts',
  'test/infra/imports.test.ts',
  'test/infra/localstack.test.ts',
  'test/infra/nag.test.ts',
  'test/infra/schedule.test.ts',
  'test/infra/stack.test.ts',
  'test/infra/state-machine.test.ts',
  'test/local/run/executor.test.ts',
  'test/local/run/progress-chains.test.ts',
  'test/local/run/options.test.ts',
  'test/local/run/progress.test.ts',
  'test/local/run/scaling.test.ts',
  'test/local/run/topup-options.test.ts',
  'test/local/run/verification.test.ts',
  'test/local/twin/kills.test.ts',
  'test/local/twin/template.test.ts',
  'test/local/simulator/dataset.test.ts',
  'test/local/simulator/growth.test.ts',
  'test/local/simulator/family.test.ts',
  'test/ops/args.test.ts',
  'test/ops/aws-errors.test.ts',
  'test/ops/ingest.test.ts',
  'test/ops/status-function.test.ts',
  'test/shared/config.test.ts',
  'test/shared/cursor.test.ts',
  'test/shared/db/errors.test.ts',
  'test/shared/pacing/backoff.test.ts',
  'test/shared/pacing/family-property.test.ts',
  'test/shared/pacing/headers.test.ts',
  'test/shared/pacing/shared-pacer.test.ts',
  'test/shared/status/view.test.ts',
  'test/shared/step/chains-plan.test.ts',
  'test/shared/step/chains.test.ts',
  'test/shared/step/position.test.ts',
  'test/shared/step/totals.test.ts',
  'test/shared/upstream/captures.test.ts',
  'test/shared/upstream/hostile-values.test.ts',
  'test/shared/upstream/normalise.test.ts',
  'test/shared/upstream/schemas.test.ts',
];

export default defineConfig({
  test: {
    exclude: ['**/node_modules/**'],
    // Integration tests start real servers and a real PostgreSQL: give them room, but keep
    // files in separate processes so a crash in one cannot poison another.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: UNIT,
          setupFiles: ['test/support/unit-guard.ts'],
          // The files share their worker's module cache: aws-cdk-lib loads once per worker, not once
          // per file (41 s -> 18 s on the 2-core machine). Unit tests keep no state between files.
          isolate: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          exclude: ['**/node_modules/**', ...UNIT],
          globalSetup: ['test/support/global-setup.ts'],
        },
      },
    ],
  },
});

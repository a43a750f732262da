import { defineConfig } from 'vitest/config';

/**
 * `npm run test:reliability`: the reliability scenarios at full size. The same files run inside
 * `npm test` at a reduced size (RELIABILITY_SCALE unset), so the main config needs no change.
 */
export default defineConfig({
  test: {
    include: ['test/reliability/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    env: { RELIABILITY_SCALE: 'full' },
    pool: 'forks',
    // Two cores: scenarios that kill processes and restart servers must not compete for them,
    // or a slow machine turns into spurious timeouts.
    fileParallelism: false,
    testTimeout: 20 * 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});

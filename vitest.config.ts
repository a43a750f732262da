import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The PostgreSQL-restart scenario left an unexplained unhandled TypeError in 1 of 4 runs:
    // it runs in `npm run test:reliability` only until that is understood.
    exclude: ['test/reliability/postgres-restart.test.ts', '**/node_modules/**'],
    globalSetup: ['test/support/global-setup.ts'],
    // Integration tests start real servers and a real PostgreSQL: give them room, but keep
    // files in separate processes so a crash in one cannot poison another.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});

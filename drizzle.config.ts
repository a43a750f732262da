import { defineConfig } from 'drizzle-kit';

/**
 * `npx drizzle-kit generate` writes SQL migrations from shared/db/schema.ts into drizzle/.
 * Generation needs no database; migrations are applied by shared/db/migrate.ts (advisory-locked).
 */
export default defineConfig({
  dialect: 'postgresql',
  schema: './shared/db/schema.ts',
  out: './drizzle',
});

import { createMigrateHandler } from './handler.ts';

/** The Lambda entry: applies the committed drizzle migrations (idempotent, lock-protected). */
export const handler = createMigrateHandler();

import { createStatusHandler } from './handler.ts';

/** The Lambda entry: one database connection per container, opened on first use. */
export const handler = createStatusHandler();

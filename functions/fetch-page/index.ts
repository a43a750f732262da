import { createHandler } from './handler.ts';

/** The Lambda entry: one handler per container, clients built on first use and reused while warm. */
export const handler = createHandler();

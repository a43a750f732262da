import { z } from 'zod';
import { sourceIdSchema } from '#shared/step.ts';

/** The status function's input: which source to describe. */
export const statusRequestSchema = z.object({ sourceId: sourceIdSchema.default('default') }).loose();

/**
 * What the status function returns: the checkpoint's view of a source. Shared by the function and
 * the operator CLI, which validates the Lambda's answer with it before printing.
 */
export const statusViewSchema = z.object({
  sourceId: z.string(),
  eventsInserted: z.number(),
  pages: z.number(),
  rejected: z.number(),
  totalReported: z.number().nullable(),
  status: z.string(),
  lastError: z.string().nullable(),
  updatedAtMs: z.number(),
  requests: z.number(),
  rateLimited: z.number(),
  /** The newest rate-limit headers the upstream sent. */
  lastRateLimit: z.object({ limit: z.number(), remaining: z.number(), resetSeconds: z.number() }).nullable(),
  /** When the function will next call the upstream (pacing), epoch ms. */
  nextRequestAtMs: z.number().nullable(),
  leaseOwner: z.string().nullable(),
  leaseExpiresAtMs: z.number().nullable(),
});
export type StatusView = z.infer<typeof statusViewSchema>;

export const statusResponseSchema = z.object({ checkpoint: statusViewSchema.nullable() });
export type StatusResponse = z.infer<typeof statusResponseSchema>;

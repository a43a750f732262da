import { InvokeCommand, type LambdaClient } from '@aws-sdk/client-lambda';
import { z } from 'zod';
import { DataSyncError } from '#shared/errors.ts';
import { statusResponseSchema } from '#shared/status/view.ts';
import type { CheckpointView } from './progress.ts';

/** The status function answered with an error, or with something that is not a status. */
export class StatusFunctionError extends DataSyncError {
  override readonly name = 'StatusFunctionError';
  readonly transient = false;
}

/**
 * Reads a source's checkpoint through the stack's status function (Lambda Invoke), which runs
 * inside the VPC: the operator needs AWS credentials, not a tunnel to the isolated database.
 */
export function statusFunctionReader(lambda: Pick<LambdaClient, 'send'>, functionName: string) {
  return async (sourceId: string): Promise<CheckpointView | null> => {
    const out = await lambda.send(
      new InvokeCommand({
        FunctionName: functionName,
        Payload: new TextEncoder().encode(JSON.stringify({ sourceId })),
      }),
    );
    const text = out.Payload ? new TextDecoder().decode(out.Payload) : '';
    if (out.FunctionError) {
      const error = z.object({ errorType: z.string(), errorMessage: z.string() }).safeParse(safeJson(text));
      const detail = error.success ? `${error.data.errorType}: ${error.data.errorMessage}` : text;
      throw new StatusFunctionError(
        `The status function ${functionName} failed (${detail}). Its log group is the stack output StatusLogGroup.`,
      );
    }
    const parsed = statusResponseSchema.safeParse(safeJson(text));
    if (!parsed.success) {
      throw new StatusFunctionError(
        `The status function ${functionName} answered something that is not a status:\n${z.prettifyError(parsed.error)}\n` +
          'Check --status-function names the stack output StatusFunctionName, and deploy the stack again if the CLI is newer than it.',
      );
    }
    return parsed.data.checkpoint;
  };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

import { DataSyncError } from '#shared/errors.ts';

/** The AWS SDK found no credentials, or AWS refused the ones it found. Fatal: the operator fixes them. */
export class AwsCredentialsError extends DataSyncError {
  override readonly name = 'AwsCredentialsError';
  readonly transient = false;
}

/** Names AWS gives credentials it does not accept (wrong, revoked or expired). */
const REFUSED_CREDENTIALS = new Set([
  'UnrecognizedClientException',
  'InvalidClientTokenId',
  'InvalidSignatureException',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'ExpiredTokenException',
]);

const HOW_TO_FIX =
  'Run `aws configure` (access keys) or `aws sso login --profile <name>` (IAM Identity Center), and set ' +
  'AWS_PROFILE=<name> when the profile is not the default one; or export AWS_ACCESS_KEY_ID and ' +
  'AWS_SECRET_ACCESS_KEY. Then run the command again.';

/**
 * An AWS SDK error about credentials as an AwsCredentialsError that says how to fix them; any
 * other error is returned unchanged. The SDK's own message names neither `aws configure` nor
 * AWS_PROFILE.
 */
export function explainAwsError(error: unknown, env: NodeJS.ProcessEnv = process.env): unknown {
  if (!(error instanceof Error)) return error;
  const cause = `${error.name}: ${error.message}`;
  const profile = env.AWS_PROFILE ? ` (AWS_PROFILE=${env.AWS_PROFILE})` : '';
  if (error.name === 'CredentialsProviderError') {
    return new AwsCredentialsError(`No AWS credentials found${profile} (${cause}). ${HOW_TO_FIX}`, {
      cause: error,
    });
  }
  if (REFUSED_CREDENTIALS.has(error.name)) {
    return new AwsCredentialsError(
      `AWS refused the credentials${profile}: they are wrong or expired (${cause}). ${HOW_TO_FIX}`,
      { cause: error },
    );
  }
  return error;
}

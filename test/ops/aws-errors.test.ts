import { describe, expect, it } from 'vitest';
import { AwsCredentialsError, explainAwsError } from '#ops/aws-errors.ts';

const named = (name: string, message: string) => Object.assign(new Error(message), { name });

describe('explainAwsError', () => {
  it('turns missing credentials into the fix: aws configure, aws sso login, AWS_PROFILE', () => {
    const sdk = named('CredentialsProviderError', 'Could not load credentials from any providers');
    const explained = explainAwsError(sdk, {});
    expect(explained).toBeInstanceOf(AwsCredentialsError);
    const message = (explained as Error).message;
    expect(message).toContain('No AWS credentials found');
    expect(message).toContain('Could not load credentials from any providers');
    expect(message).toContain('aws configure');
    expect(message).toContain('aws sso login');
    expect(message).toContain('AWS_PROFILE');
    expect((explained as Error).cause).toBe(sdk);
  });

  it('names the profile that was tried', () => {
    const sdk = named('CredentialsProviderError', 'Could not load credentials from any providers');
    expect((explainAwsError(sdk, { AWS_PROFILE: 'ops' }) as Error).message).toContain('(AWS_PROFILE=ops)');
  });

  it('says refused credentials are wrong or expired', () => {
    for (const name of [
      'UnrecognizedClientException',
      'ExpiredTokenException',
      'InvalidSignatureException',
    ]) {
      const explained = explainAwsError(
        named(name, 'The security token included in the request is invalid.'),
        {},
      );
      expect(explained).toBeInstanceOf(AwsCredentialsError);
      expect((explained as Error).message).toMatch(/wrong or expired.*aws configure/);
    }
  });

  it('leaves every other error as it is', () => {
    const other = named('ExecutionDoesNotExist', 'no such execution');
    expect(explainAwsError(other, {})).toBe(other);
    expect(explainAwsError('text', {})).toBe('text');
  });
});

import { App } from 'aws-cdk-lib';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { ConfigError } from '#shared/errors.ts';
import { IngestionStack, type IngestionStackProps } from './ingestion-stack.ts';

// Apart from state-machine.ts because it builds the whole stack, which itself builds the state
// machine: kept there, the two modules imported each other.

/** A readable stand-in for a CloudFormation reference inside the plain ASL. */
function placeholder(token: unknown): string {
  if (token && typeof token === 'object') {
    const t = token as Record<string, unknown>;
    if ('Ref' in t) {
      const ref = String(t.Ref);
      const pseudo: Record<string, string> = {
        'AWS::Partition': 'aws',
        'AWS::Region': 'us-east-1',
        'AWS::AccountId': '123456789012',
        'AWS::URLSuffix': 'amazonaws.com',
      };
      return pseudo[ref] ?? `arn:aws:lambda:us-east-1:123456789012:function:${ref}`;
    }
    if ('Fn::GetAtt' in t) {
      const [logicalId] = t['Fn::GetAtt'] as [string, string];
      return `arn:aws:lambda:us-east-1:123456789012:function:${logicalId}`;
    }
  }
  throw new ConfigError(
    `Cannot turn ${JSON.stringify(token)} into plain ASL: only Ref and Fn::GetAtt are expected in the definition; update synthesizeDefinition to handle it.`,
  );
}

/** Turns the resolved `DefinitionString` (a string or an `Fn::Join`) into the plain ASL object. */
export function definitionToAsl(resolved: unknown): Record<string, unknown> {
  if (typeof resolved === 'string') return JSON.parse(resolved);
  const join = (resolved as { 'Fn::Join'?: [string, unknown[]] })['Fn::Join'];
  if (!join) {
    throw new ConfigError(
      `Unexpected state machine definition shape: ${JSON.stringify(resolved).slice(0, 200)}`,
    );
  }
  const [separator, parts] = join;
  return JSON.parse(parts.map((p) => (typeof p === 'string' ? p : placeholder(p))).join(separator));
}

/**
 * The plain ASL of the real stack's state machine, built in memory with bundling skipped: the one
 * definition both the cloud and the local runner execute. ARNs are readable placeholders. The
 * upstream URL is irrelevant to the definition, so a reserved `.invalid` host stands in for it.
 */
export function synthesizeDefinition(props: Partial<IngestionStackProps> = {}): Record<string, unknown> {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  const stack = new IngestionStack(app, 'DataSyncIngest', {
    datasyncApiUrl: 'https://datasync.invalid/api/v1',
    ...props,
  });
  const cfn = stack.ingestStateMachine.stateMachine.node.defaultChild as sfn.CfnStateMachine;
  return definitionToAsl(stack.resolve(cfn.definitionString));
}

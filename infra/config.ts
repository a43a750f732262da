import { z } from 'zod';
import { MAX_CHAINS, stepSettingsSchema } from '#shared/config.ts';
import { ConfigError } from '#shared/errors.ts';
import { httpUrlSchema } from '#shared/url.ts';

const CHAINS_FIX = `must be auto (chains only when the upstream's latency exceeds the spacing) or a whole number of chains from 1 to ${MAX_CHAINS}`;

/*
 * Context values arrive as strings: each is coerced here and then checked by the function's own
 * settings schema (shared/config.ts), which alone declares the bounds.
 */
const settings = stepSettingsSchema.shape;

/**
 * How many cursor chains read a source at once: `auto` lets Plan decide from the first page, a
 * number forces it (1 = one chain, as before partitioning).
 */
export const chainsSchema = z.union([z.string(), z.number()], { error: CHAINS_FIX }).transform((raw, ctx) => {
  const value = raw === 'auto' || typeof raw === 'number' || raw.trim() === '' ? raw : Number(raw);
  const checked = settings.chains.unwrap().safeParse(value);
  if (checked.success) return checked.data;
  ctx.addIssue({ code: 'custom', message: CHAINS_FIX });
  return z.NEVER;
});
export type Chains = z.infer<typeof chainsSchema>;

/** Where the stack is deployed: real AWS (VPC + RDS) or LocalStack (compose Postgres, no VPC). */
export const targetSchema = z.enum(['aws', 'localstack']);
export type Target = z.infer<typeof targetSchema>;

/** A Step Functions state machine name (also part of its ARN): letters, digits, `-` and `_`. */
export const stateMachineNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,80}$/, { error: 'must be 1-80 letters, digits, "-" or "_"' });

const booleanString = z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')], {
  error: 'must be true or false',
});

/**
 * Choices the app reads from CDK context (`-c key=value` or cdk.json `context`). Context values
 * given on the command line are strings, so numbers and booleans are coerced here, once.
 */
export const contextSchema = z.object({
  target: targetSchema.default('aws'),
  datasyncApiUrl: httpUrlSchema.optional(),
  stackName: z
    .string()
    .regex(/^[A-Za-z][A-Za-z0-9-]{0,127}$/, { error: 'must be a CloudFormation stack name' })
    .default('DataSyncIngest'),
  stateMachineName: stateMachineNameSchema.optional(),
  apiKeySecretName: z.string().min(1).optional(),
  apiKeySecretArn: z
    .string()
    .startsWith('arn:', { error: 'must be a Secrets Manager secret ARN' })
    .optional(),
  apiKeySecretKmsKeyArn: z
    .string()
    .startsWith('arn:', { error: 'must be the ARN of the KMS key the imported secret is encrypted with' })
    .optional(),
  alarmTopicArn: z.string().startsWith('arn:', { error: 'must be an SNS topic ARN' }).optional(),
  /** `lean` (about $3 a month idle): IPv6 egress only, no NAT. Explicit keys override it. */
  profile: z.enum(['default', 'lean']).default('default'),
  egress: z.enum(['nat-instance', 'nat-gateway', 'ipv6']).optional(),
  natGateways: z.coerce.number().int().min(1).max(3).optional(),
  secretsManagerEndpoint: booleanString.optional(),
  database: z.enum(['serverless', 'instance']).optional(),
  dashboard: booleanString.optional(),
  /** A PEM of the RDS CAs shipped in every bundle (docs/deploy.md, TLS). */
  databaseCaBundle: z.string().min(1).optional(),
  /** Set by `npm run deploy`: refuse alarms that notify nobody. */
  requireAlarmDestination: booleanString.optional(),
  /** Set by `npm run destroy`: the app is built only to name the stack, so the API URL may be absent. */
  destroy: booleanString.optional(),
  databaseInstanceType: z
    .string()
    .regex(/^[a-z0-9]+\.[a-z0-9]+$/, { error: 'must look like t4g.micro' })
    .optional(),
  deletionProtection: booleanString.optional(),
  databaseRemovalPolicy: z.enum(['snapshot', 'retain', 'destroy']).optional(),
  maxIterationsPerExecution: z.coerce
    .number({ error: 'must be a whole number' })
    .pipe(settings.maxIterationsPerExecution.unwrap())
    .optional(),
  chains: chainsSchema.optional(),
  // Context values arrive as strings: coerced here, bounded by the function's own settings schema.
  minRequestSpacingMs: z.coerce.number().pipe(settings.minSpacingMs.unwrap()).optional(),
  pageSize: z.coerce.number().pipe(settings.pageSize.unwrap()).optional(),
  /** 0 (the default) reserves nothing: a reservation fails the deploy on accounts with a small quota. */
  reservedConcurrency: z.coerce
    .number({ error: 'must be a whole number: 0 for no reservation, or the executions to reserve' })
    .int({ error: 'must be a whole number: 0 for no reservation, or the executions to reserve' })
    .min(0, { error: 'must be 0 (no reservation) or more' })
    .max(1000, { error: 'must be at most 1000 (the default account quota)' })
    .optional(),
  /** Alarm notifications are also mailed here (the subscription must be confirmed from the mail). */
  alarmEmail: z.email({ error: 'must be an email address' }).optional(),
});
export type AppContext = z.infer<typeof contextSchema>;

/** The keys `contextSchema` knows, so the app reads exactly these from the CDK context. */
export const CONTEXT_KEYS = Object.keys(contextSchema.shape) as (keyof AppContext)[];

/** Parses the raw context values; an invalid one is a ConfigError naming the key and the fix. */
export function parseContext(raw: Record<string, unknown>): AppContext {
  const parsed = contextSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(
      `Invalid CDK context:\n${z.prettifyError(parsed.error)}\nFix the value passed with -c key=value or in cdk.json "context".`,
    );
  }
  if (parsed.data.apiKeySecretName && parsed.data.apiKeySecretArn) {
    throw new ConfigError(
      'Invalid CDK context: set either apiKeySecretName or apiKeySecretArn, not both (they name the same secret).',
    );
  }
  return parsed.data;
}

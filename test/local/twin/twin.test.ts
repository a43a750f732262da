import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestOnTwin, openTwin, PROJECT_ROOT, type Twin, type TwinSummary } from '#local/twin/runner.ts';
import { FunctionSandboxes } from '#local/twin/sandbox.ts';
import { resourcesOfType, templateFunction } from '#local/twin/template.ts';
import { makeLocalCa } from '#local/twin/tls.ts';

/**
 * `npm run twin` at a small size: a real `cdk synth`, then the template's migration trigger and
 * state machine running the bundles from cdk.out in Node 24 processes (installed from the npm
 * registry into .local/tools/node24 on first use), secrets from the local Secrets Manager, TLS
 * verified against the local CA, one function process SIGKILLed mid-page.
 */

const EVENTS = 6000;
const workDir = join(PROJECT_ROOT, '.local', `twin-test-${process.pid}`);
let twin: Twin;

beforeAll(async () => {
  twin = await openTwin({
    events: EVENTS,
    kills: [],
    latencyMs: 1500,
    // Six pages of 1000: the kill lands mid-run, and every request stays within one rate-limit window.
    context: { pageSize: '1000' },
    workDir,
  });
}, 300_000);

afterAll(async () => {
  await twin?.close();
  rmSync(workDir, { recursive: true, force: true });
});

/** The migrate function with one variable of its template environment replaced. */
function migrateWith(variable: string, value: string): FunctionSandboxes {
  const id = resourcesOfType(twin.template, 'AWS::Lambda::Function').find((f) =>
    String(twin.template.Resources[f]?.Properties?.Description).includes('migrations'),
  ) as string;
  const spec = twin.spec(id);
  return new FunctionSandboxes(
    { ...spec, env: { ...spec.env, [variable]: value } },
    twin.node.path,
    () => {},
  );
}

/** The database secret as the twin serves it, with `change` applied, under a new ARN. */
function databaseSecretWith(change: Record<string, unknown>): string {
  const arn = `${twin.resolver.arnOf(twin.database.secretId)}-variant-${Object.keys(change).join('-')}`;
  const value = {
    username: twin.db.username,
    password: twin.db.password,
    host: twin.db.host,
    port: twin.db.port,
    dbname: twin.db.dbname,
    engine: 'postgres',
    ...change,
  };
  twin.secrets.add({ arn, name: arn, value: JSON.stringify(value) });
  return arn;
}

async function failureOf(fn: FunctionSandboxes): Promise<Error> {
  try {
    await fn.invoke({});
  } catch (error) {
    return error as Error;
  } finally {
    await fn.close();
  }
  throw new Error('the invocation succeeded');
}

describe('the twin: the deployed bytes end to end', () => {
  let summary: TwinSummary;

  it('migrates, ingests every event exactly once on Node 24 and resumes after a SIGKILL mid-page', async () => {
    summary = await ingestOnTwin(twin, { kills: [{ page: 3, anchor: 'request', delayMs: 100 }] });
    expect(summary.error).toBeUndefined();
    expect(summary.problem).toBeNull();
    expect(summary.exact).toBe(true);
    expect(summary.events).toBe(twin.simulator.dataset.expectedValidCount());
    expect(summary.distinctIds).toBe(summary.events);
    expect(summary.events).toBeGreaterThan(EVENTS * 0.9);
    // The migration trigger ran the migrate bundle against the empty database.
    expect((summary.migrate as { applied: number }).applied).toBeGreaterThan(0);
    // The bundles ran on Node 24, not on the Node that runs the tests.
    expect(summary.node.sandboxes.length).toBeGreaterThan(0);
    for (const v of summary.node.sandboxes) expect(v).toMatch(/^v24\./);
    // One function process killed mid-page: the task failed as Lambda reports a runtime that
    // exited, the state machine's Retry ran the page in a new process, and the run ended exact.
    expect(summary.kills).toHaveLength(1);
    expect(summary.kills[0]?.reportedAs).toMatch(
      /^Lambda\.Unknown: .*Runtime exited with error: signal: killed/,
    );
    expect(summary.sandboxes.lost).toBe(1);
    expect(summary.sandboxes.coldStarts).toBeGreaterThanOrEqual(2);
    // Both secrets came from the local Secrets Manager, by the ARNs the template's references resolve to.
    const apiKeyArn = [...twin.secrets.reads.keys()].find((k) => k.includes('ApiKeySecret'));
    expect(apiKeyArn).toBeDefined();
    expect(twin.secrets.reads.get(twin.resolver.arnOf(twin.database.secretId))).toBeGreaterThan(0);
  }, 300_000);

  it('runs each function with its template environment: only Lambda-only paths stand in locally', () => {
    const variables = new Set(twin.standIns.map((s) => s.variable));
    for (const s of twin.standIns) {
      expect(
        s.template === '/var/runtime/ca-cert.pem' ||
          s.template.startsWith('/var/task') ||
          s.variable === 'DATABASE_CA_FILE',
      ).toBe(true);
    }
    expect(variables.has('MIGRATIONS_DIR')).toBe(true);
    const id = resourcesOfType(twin.template, 'AWS::Lambda::Function').find((f) =>
      String(twin.template.Resources[f]?.Properties?.Description).includes('page'),
    ) as string;
    const fetchPage = twin.spec(id);
    const templateEnv = templateFunction(twin.template, twin.outdir, id).environment;
    expect(fetchPage.env.DATABASE_SSL).toBe('verify-full');
    expect(fetchPage.env.DATASYNC_API_URL).toBe(twin.simulator.url);
    // The template's reference, resolved: one of the secrets attached to the database (the master's or a role's).
    expect(fetchPage.env.DATABASE_SECRET_ARN).toBe(twin.resolver.resolve(templateEnv.DATABASE_SECRET_ARN));
    expect(twin.database.attachedSecretIds.map((s) => twin.resolver.arnOf(s))).toContain(
      fetchPage.env.DATABASE_SECRET_ARN,
    );
  });

  it('the bundled function refuses a server whose certificate names another host', async () => {
    // The certificate is for "localhost"; the same server reached as 127.0.0.1 must not pass.
    const error = await failureOf(
      migrateWith('DATABASE_SECRET_ARN', databaseSecretWith({ host: '127.0.0.1' })),
    );
    expect(error.message).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID/);
  }, 120_000);

  it('the bundled function refuses a certificate its CA file does not vouch for', async () => {
    const other = makeLocalCa(join(workDir, 'other-ca'), 'localhost', 'another');
    const variable = twin.standIns.some((s) => s.variable === 'DATABASE_CA_FILE')
      ? 'DATABASE_CA_FILE'
      : 'NODE_EXTRA_CA_CERTS';
    const error = await failureOf(migrateWith(variable, other.caFile));
    expect(error.message).toMatch(
      /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT/,
    );
  }, 120_000);

  it('the throwaway server accepts TLS only, as rds.force_ssl does', async () => {
    const error = await failureOf(migrateWith('DATABASE_SSL', 'disable'));
    expect(error.message).toMatch(/no pg_hba\.conf entry.*no encryption/i);
  }, 120_000);
});

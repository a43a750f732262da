import { describe, expect, it } from 'vitest';
import {
  CONFIG_ENV_NAMES,
  configDefaults,
  configToEnv,
  loadConfig,
  loadDatabaseConfig,
  parseConfig,
  timeScaledSettings,
} from '#shared/config.ts';
import { ConfigError } from '#shared/errors.ts';
import { isPostgresUrl } from '#shared/url.ts';

const required = {
  DATASYNC_API_URL: 'https://api.example.com/api/v1',
  DATASYNC_API_KEY: 'k',
  DATABASE_URL: 'postgres://u:p@db:5432/x',
};

describe('the fetch-page configuration', () => {
  it('gives every tunable its default when the environment sets none, in the step’s own names', () => {
    const config = loadConfig(required);
    expect(config).toMatchObject(configDefaults);
    expect(config).toMatchObject({
      apiUrl: required.DATASYNC_API_URL,
      apiKey: 'k',
      databaseUrl: required.DATABASE_URL,
      minSpacingMs: 2200,
      safetyMarginMs: 250,
      cursorRefreshMarginMs: 15_000,
      cursorTtlMs: 116_000,
    });
  });

  it('reads back from the environment exactly what configToEnv wrote (the stack’s path)', () => {
    const typed = parseConfig({
      apiUrl: 'https://api.example.com/api/v1',
      apiKeySecretArn: 'arn:aws:secretsmanager:eu-west-1:1:secret:key',
      databaseSecretArn: 'arn:aws:secretsmanager:eu-west-1:1:secret:db',
      minSpacingMs: 3000,
      pageSize: 1000,
      writeHeadroomMs: 7000,
    });
    const env = configToEnv(typed);
    expect(env).toMatchObject({
      MIN_REQUEST_SPACING_MS: '3000',
      PAGE_SIZE: '1000',
      WRITE_HEADROOM_MS: '7000',
    });
    expect(loadConfig(env)).toEqual(typed);
  });

  it('writes only the settings it is given, so the others keep their single default', () => {
    expect(configToEnv({ apiUrl: 'https://h/api/v1', minSpacingMs: 2500 })).toEqual({
      DATASYNC_API_URL: 'https://h/api/v1',
      MIN_REQUEST_SPACING_MS: '2500',
    });
  });

  it('names one variable for each setting, and no variable twice', () => {
    const names = Object.values(CONFIG_ENV_NAMES);
    expect(new Set(names).size).toBe(names.length);
    for (const key of Object.keys(configDefaults)) expect(CONFIG_ENV_NAMES).toHaveProperty(key);
  });

  it.each([
    ['MIN_REQUEST_SPACING_MS', 'abc'],
    ['MIN_REQUEST_SPACING_MS', ''],
    ['RETRY_BUDGET_MS', '1.5'],
    ['LEASE_TTL_MS', '5'],
    ['DATABASE_URL', 'mysql://x/y'],
  ])('a malformed %s (%j) is a ConfigError naming the variable, not a silent default', (name, value) => {
    const err = (() => {
      try {
        loadConfig({ ...required, [name]: value });
      } catch (e) {
        return e;
      }
    })() as Error;
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain(name);
  });

  it('a typed configuration is checked by the same schema, with the setting’s name in the message', () => {
    expect(() =>
      parseConfig({ apiUrl: 'https://h/api/v1', apiKey: 'k', databaseUrl: 'postgres://h/d', pageSize: 0 }),
    ).toThrow(/pageSize/);
  });
});

describe('time-scaled settings (local runs against a faster simulator clock)', () => {
  it('shrinks the durations on the upstream’s clock, clamped to their bounds, and keeps the ones on this machine’s', () => {
    const scaled = timeScaledSettings(configDefaults, 20);
    expect(scaled).toMatchObject({
      minSpacingMs: 110,
      safetyMarginMs: 13,
      cursorRefreshMarginMs: 750,
      leaseTtlMs: 10_000, // 180 s / 20 = 9 s, below the lease's 10 s floor
      retryBudgetMs: 1_000,
      requestTimeoutMs: configDefaults.requestTimeoutMs,
      writeHeadroomMs: configDefaults.writeHeadroomMs,
      pageSize: configDefaults.pageSize,
    });
    expect(timeScaledSettings(configDefaults, 100).retryBudgetMs).toBe(1_000); // at most 20 times shorter
  });

  it('a slowed-down run (scale below 1) stays within the bounds, and the retry budget never grows', () => {
    const slow = timeScaledSettings(configDefaults, 0.1);
    expect(slow.cursorRefreshMarginMs).toBe(110_000);
    expect(slow.minSpacingMs).toBe(22_000);
    expect(slow.retryBudgetMs).toBe(configDefaults.retryBudgetMs);
    expect(() =>
      parseConfig({ apiUrl: 'https://h/api/v1', apiKey: 'k', databaseUrl: 'postgres://h/d', ...slow }),
    ).not.toThrow();
  });

  it('keeps the other fields of a full configuration', () => {
    const full = loadConfig(required);
    expect(timeScaledSettings(full, 10)).toMatchObject({
      apiUrl: full.apiUrl,
      databaseUrl: full.databaseUrl,
    });
  });

  it('refuses a scale that is not a positive number', () => {
    expect(() => timeScaledSettings(configDefaults, 0)).toThrow(ConfigError);
  });
});

describe('the database settings the migrate and status functions share with fetch-page', () => {
  it('reads the URL or the secret and the TLS mode, in the same names as the fetch-page function', () => {
    expect(loadDatabaseConfig({ DATABASE_SECRET_ARN: 'arn:s', DATABASE_SSL: 'verify-full' })).toEqual({
      databaseSecretArn: 'arn:s',
      databaseSsl: 'verify-full',
    });
    expect(loadConfig({ ...required, DATABASE_SSL: 'require' }).databaseSsl).toBe('require');
  });

  it('names the variable and the fix when neither the URL nor the secret is set, or the TLS mode is unknown', () => {
    expect(() => loadDatabaseConfig({}, 'the status function')).toThrow(
      /Invalid configuration of the status function:[\s\S]*set DATABASE_SECRET_ARN[\s\S]*or DATABASE_URL/,
    );
    expect(() => loadDatabaseConfig({ DATABASE_URL: 'postgres://h/d', DATABASE_SSL: 'verify-ca' })).toThrow(
      /must be disable, require or verify-full[\s\S]*DATABASE_SSL/,
    );
  });
});

describe('the one postgres-URL check', () => {
  it('accepts single- and multi-host URLs (postgres.js fails over between hosts) and refuses others', () => {
    expect(isPostgresUrl('postgres://u:p@db:5432/x')).toBe(true);
    expect(isPostgresUrl('postgresql://u@127.0.0.1:1,db:5432/x')).toBe(true);
    expect(isPostgresUrl('mysql://u@db/x')).toBe(false);
    expect(isPostgresUrl('postgres:///x')).toBe(false);
  });
});

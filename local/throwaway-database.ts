import { randomBytes } from 'node:crypto';
import postgres from 'postgres';

/**
 * The PostgreSQL the tests use: TEST_DATABASE_URL, else DATABASE_URL, else the machine's
 * local server (127.0.0.1:5432, user postgres, trust auth). `.ci/run` makes sure it is up. The
 * tests (test/support/db.ts) and the benchmarks (bench/lib.ts) create theirs here.
 */
export const ADMIN_DATABASE_URL =
  process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/**
 * Creates a throw-away database so that test files (which run in parallel processes)
 * never see each other's rows. Call `drop()` in afterAll.
 */
export async function createTestDatabase(prefix = 'dsi_test'): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${name}`);
  } catch (error) {
    await admin.end();
    throw new Error(
      `Cannot create a test database on ${redact(ADMIN_DATABASE_URL)}: ${(error as Error).message}. ` +
        'Start PostgreSQL (see README, "Running the tests") or set TEST_DATABASE_URL to a server where the user may CREATE DATABASE.',
    );
  }
  await admin.end();
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const a = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
      try {
        await a.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await a.end();
      }
    },
  };
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparseable url>';
  }
}

import { z } from 'zod';

/*
 * The project's two URL checks, each defined once: the DataSync API base (an absolute http(s)
 * URL with a host) and a PostgreSQL connection URL. The CLIs, the stack's props and the
 * function's configuration all validate with these schemas, so a URL accepted by one is
 * accepted by all.
 */

/** true for an absolute `http:` or `https:` URL with a host name. */
export function isHttpUrl(value: string): boolean {
  try {
    const u = new URL(value.trim());
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname.length > 0;
  } catch {
    return false;
  }
}

/**
 * true for a `postgres://` or `postgresql://` URL with a host part. Not checked with `new URL`:
 * a multi-host URL (`postgres://u@h1:5432,h2:5432/db`, which postgres.js fails over between) is
 * valid for the driver but not for WHATWG URL parsing.
 */
export function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\/[^/?#\s]+/.test(value.trim());
}

export const httpUrlSchema = z
  .string({ error: 'is required: an absolute http(s) URL such as https://host/api/v1' })
  .trim()
  .refine(isHttpUrl, { error: 'must be an absolute http(s) URL such as https://host/api/v1' });

export const postgresUrlSchema = z
  .string({ error: 'is required: a URL such as postgres://user:password@host:5432/db' })
  .trim()
  .refine(isPostgresUrl, { error: 'must be a URL such as postgres://user:password@host:5432/db' });

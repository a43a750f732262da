import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A raw HTTP response as captured from the live service: status line, headers, blank line, body. */
export interface HttpCapture {
  status: number;
  statusText: string;
  /** Header names lower-cased. */
  headers: Record<string, string>;
  body: string;
}

const here = dirname(fileURLToPath(import.meta.url));
/** The team handbook's captures, beside the repository (`../shared/captures`). Absent on a bare clone. */
export const SHARED_CAPTURES_DIR = resolve(here, '../../../shared/captures');
export const FIXTURES_DIR = resolve(here, '../fixtures');

/** Parses a capture. A file with no status line (e.g. `01-root.http`) is a body only: status 200, no headers. */
export function parseHttpCapture(text: string): HttpCapture {
  if (!text.startsWith('HTTP/')) {
    return { status: 200, statusText: 'OK', headers: {}, body: text };
  }
  const sep = text.search(/\r?\n\r?\n/);
  const head = sep === -1 ? text : text.slice(0, sep);
  const body = sep === -1 ? '' : text.slice(sep).replace(/^\r?\n\r?\n/, '');
  const [statusLine = '', ...headerLines] = head.split(/\r?\n/);
  const m = /^HTTP\/\d(?:\.\d)?\s+(\d{3})\s*(.*)$/.exec(statusLine);
  if (!m) throw new Error(`Not an HTTP status line: ${statusLine}`);
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status: Number(m[1]), statusText: m[2] ?? '', headers, body };
}

/** true when the handbook's captures folder is beside the repo (it is in CI and on developer machines). */
export function sharedCapturesAvailable(): boolean {
  return existsSync(join(SHARED_CAPTURES_DIR, '06-events-limit-5000.http'));
}

/** Reads a capture from `../shared/captures`. */
export function readSharedCapture(name: string): HttpCapture {
  return parseHttpCapture(readFileSync(join(SHARED_CAPTURES_DIR, name), 'utf8'));
}

/** Reads a capture excerpt kept in the repo (`test/fixtures`). */
export function readFixtureCapture(name: string): HttpCapture {
  return parseHttpCapture(readFileSync(join(FIXTURES_DIR, name), 'utf8'));
}

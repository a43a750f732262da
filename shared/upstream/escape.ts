/*
 * Text from the upstream (error messages, codes, header values) is data, not terminal output:
 * before it reaches a terminal, a log line or `checkpoints.last_error` (which `ingest status`
 * prints), every character that could move the cursor, recolour the screen or reorder the line
 * is shown as a \uXXXX escape, and a credential it quotes is masked.
 */

/**
 * C0 controls (newline, ESC of ANSI sequences...), DEL, C1 controls (U+009B is a one-character
 * CSI), the line and paragraph separators, bidirectional overrides and isolates, zero-width
 * characters and the BOM.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is what it is for
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200b-\u200f\u2060\ufeff]/g;

/** Most characters of upstream text an error quotes. */
export const MAX_QUOTED_CHARS = 300;

/** `s` with every unsafe character as a visible \uXXXX escape, cut to `max` characters. */
export function escapeText(s: string, max = MAX_QUOTED_CHARS): string {
  const cut = s.length > max ? `${s.slice(0, max)}…` : s;
  return cut.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** `s` with every occurrence of each secret replaced by `***` (a secret shorter than 4 characters is left: it would mask ordinary words). */
export function maskSecrets(s: string, secrets: readonly (string | null | undefined)[]): string {
  let out = s;
  for (const secret of secrets) {
    if (!secret || secret.length < 4) continue;
    out = out.split(secret).join('***');
  }
  return out;
}

/** A URL as it may be shown: user name and password replaced by `***`; a string that is no URL is escaped only. */
export function maskUrl(raw: string): string {
  try {
    const u = new URL(raw.trim());
    if (u.username === '' && u.password === '') return escapeText(raw);
    if (u.username !== '') u.username = '***';
    if (u.password !== '') u.password = '***';
    return escapeText(u.toString());
  } catch {
    // Not parseable: still hide what looks like user:password@ before a host.
    return escapeText(raw.replace(/\/\/[^/@\s]*@/, '//***@'));
  }
}

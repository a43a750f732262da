/*
 * The command that resumes an interrupted run, as it may be printed: the user's own options,
 * minus the secrets. A resume hint used to repeat --api-key and the database password in clear.
 */

const SECRET_VALUE_OPTIONS = new Set(['--api-key']);
const URL_OPTIONS = new Set(['--database-url', '--api-url']);

/** A URL with its password (and, for an API, any query string that may carry a key) replaced. */
export function maskCredentials(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*)@/i, (_all, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return colon < 0 ? `${scheme}${userinfo}@` : `${scheme}${userinfo.slice(0, colon)}:<password>@`;
  });
}

function quote(a: string): string {
  return /^[\w@%+=:,./<>-]+$/.test(a) && !/[<>]/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

/**
 * `npm run local -- <argv>` with the value of --api-key replaced by `"$DATASYNC_API_KEY"` (the
 * shell fills it in if the variable is set; the key itself is never printed) and the password of
 * a --database-url or --api-url replaced by `<password>`.
 */
export function resumeCommandOf(argv: readonly string[]): string {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const eq = a.indexOf('=');
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const inline = a.startsWith('--') && eq > 0 ? a.slice(eq + 1) : null;
    if (SECRET_VALUE_OPTIONS.has(name)) {
      out.push(name, '"$DATASYNC_API_KEY"');
      if (inline === null) i++;
      continue;
    }
    if (URL_OPTIONS.has(name)) {
      const value = inline ?? argv[i + 1];
      if (inline === null) i++;
      out.push(name);
      if (value !== undefined) out.push(quote(maskCredentials(value)));
      continue;
    }
    out.push(quote(a));
  }
  return `npm run local${out.length ? ` -- ${out.join(' ')}` : ''}`;
}

// Applies one guard to postgres.js (porsager/postgres) after install: `npm ci` runs it as the
// project's postinstall script, and `node scripts/patch-postgres.mjs --check` verifies it.
//
// The defect (postgres 3.4.9, porsager/postgres#1154, #1208; fix proposed in #1168 and #1176,
// not released): a message under 1024 bytes is flushed by `setImmediate(nextWrite)`. If the
// server closes the connection in between (a restart, a failover, an idle-session kill),
// `closed()` sets `socket = null` and `nextWrite` throws a TypeError from the immediate callback,
// where no caller can catch it: the process dies. Our own repro: `sql.begin` sends ROLLBACK after
// the server closed the connection mid-transaction (test/reliability/postgres-restart.test.ts
// failed 1 run in 4 this way). By then `closed()` has already rejected the pending queries with
// CONNECTION_CLOSED, so dropping the buffered bytes is what the proposed upstream fix does too.
//
// That is why package.json pins postgres exactly: with a range, `npm ci` on a fresh clone could
// resolve a release whose code this script no longer finds (it then fails the install). Move the
// pin only together with this script, after checking the new release for the defect.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, sep } from 'node:path';

const MARKER = '/* datasync-ingest: porsager/postgres#1208 guard */';
const ORIGINAL = 'function nextWrite(fn) {\n    const x = socket.write(chunk, fn)';
const PATCHED = `function nextWrite(fn) {\n    ${MARKER} if (!socket) return (chunk = nextWriteTimer = null, false)\n    const x = socket.write(chunk, fn)`;

const check = process.argv.includes('--check');
const require = createRequire(import.meta.url);
let root;
try {
  // postgres's `exports` hides package.json; its entry point is <root>/cjs/src/index.js.
  const entry = require.resolve('postgres');
  const at = entry.lastIndexOf(`${sep}cjs${sep}src${sep}`);
  if (at < 0) {
    console.error(
      `patch-postgres: postgres resolves to ${entry}, not <root>/cjs/src/index.js; update this script`,
    );
    process.exit(1);
  }
  root = entry.slice(0, at);
} catch {
  console.error('patch-postgres: postgres is not installed; nothing to patch');
  process.exit(check ? 1 : 0);
}
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const problems = [];
let guarded = 0;
for (const rel of ['src/connection.js', 'cjs/src/connection.js', 'cf/src/connection.js']) {
  const file = join(root, rel);
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    continue; // this build of postgres does not ship that flavour
  }
  if (text.includes(MARKER)) {
    guarded++;
    continue;
  }
  if (!text.includes(ORIGINAL)) {
    problems.push(
      `${file}: the code to guard was not found (postgres ${version}). If this version fixed nextWrite upstream, ` +
        'delete scripts/patch-postgres.mjs and its postinstall entry; otherwise update ORIGINAL in that script.',
    );
    continue;
  }
  if (check) problems.push(`${file}: not patched; run \`node scripts/patch-postgres.mjs\` (npm ci does it)`);
  else {
    writeFileSync(file, text.replace(ORIGINAL, PATCHED));
    guarded++;
  }
}
// The Node flavour (src/, used by import and by the Lambda bundle) must be among them.
if (guarded === 0 && problems.length === 0) {
  problems.push(`${root}: no connection.js found to guard (postgres ${version}); update this script`);
}
if (problems.length > 0) {
  console.error(`patch-postgres: ${problems.join('\n')}`);
  process.exit(1);
}

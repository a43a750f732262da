// Applies guards to postgres.js (porsager/postgres) after install: `npm ci` runs it as the
// project's postinstall script, and `node scripts/patch-postgres.mjs --check` verifies them (the
// Lambda bundling refuses to ship postgres.js without them). Each guard is applied on its own, so
// an install patched by an older copy of this script gets the guards it lacks.
//
// All of them concern one event: the server closes a connection while it is in use (a restart, a
// failover, an idle-session kill). postgres.js 3.4.9 reconnects the same connection object for the
// next query but keeps state of the dead session:
//
// 1. nextWrite (porsager/postgres#1154, #1208; fix proposed in #1168 and #1176, not released): a
//    message under 1024 bytes is flushed by `setImmediate(nextWrite)`. If the connection closed in
//    between, `closed()` has set `socket = null` and `nextWrite` throws a TypeError from the
//    immediate callback, where no caller can catch it: the process dies. Our repro: `sql.begin`
//    sends ROLLBACK after the server closed the connection mid-transaction
//    (test/reliability/postgres-restart.test.ts failed 1 run in 4 this way). The guard drops the
//    buffered bytes.
// 2. execute on a closed connection (#1215, #1216; not released): that ROLLBACK is not rejected.
//    The connection still holds the query that was in flight, so the ROLLBACK is queued behind it
//    as sent, and its bytes are dropped by guard 1. After the next reconnect the connection waits
//    for the answer to a query the server never received: every later query of that client hangs,
//    with no timeout to end it (connect_timeout was cancelled, statement_timeout is the server's).
//    That was the stall of the PostgreSQL-restart scenario (#10): a step hung until the function
//    timeout, then the retry waited for it. A Lambda would lose its function timeout and a retry
//    the same way after an RDS restart or failover. The guard rejects a query issued on a
//    connection without a socket with CONNECTION_CLOSED, as the query in flight was.
// 3. pending write (#1215): a query issued between the socket's 'error' and 'close' events
//    (sql.begin's ROLLBACK after a COPY was cut off, which ends in a reset) is buffered with a
//    flush scheduled. `closed()` cancels the flush but leaves `nextWriteTimer` set, so write()
//    never schedules another: every later connect attempt's startup message stays unsent behind
//    the dead session's bytes and fails with CONNECT_TIMEOUT (10 s each, until 1 KB has piled up).
//    The 8 retries of a step then took about 90 s, the timeout of the PostgreSQL-restart
//    scenario. The guard drops the pending bytes with the session.
// 4. state of the dead session (#1215): `closed()` keeps the query in flight, its result and the
//    server's last error, and after a socket error also the queries issued in that gap. The first
//    query after the reconnect then failed with the dead backend's FATAL (57P01 "terminating
//    connection due to administrator command") although the new session was fine, and a query
//    queued in the gap waited for an answer that never came. The guard rejects what is still
//    pending with CONNECTION_CLOSED and clears the rest.
//
// That is why package.json pins postgres exactly: with a range, `npm ci` on a fresh clone could
// resolve a release whose code this script no longer finds (it then fails the install). Move the
// pin only together with this script, after checking the new release for these defects
// (test/shared/db/postgres-guard.test.ts reproduces them).
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, sep } from 'node:path';

const GUARDS = [
  {
    name: 'porsager/postgres#1208 guard',
    original: 'function nextWrite(fn) {\n    const x = socket.write(chunk, fn)',
    patched: (marker) =>
      `function nextWrite(fn) {\n    ${marker} if (!socket) return (chunk = nextWriteTimer = null, false)\n    const x = socket.write(chunk, fn)`,
  },
  {
    name: 'porsager/postgres#1216 closed-connection guard',
    original:
      "    if (terminated)\n      return queryError(q, Errors.connection('CONNECTION_DESTROYED', options))\n",
    // Only a transaction's or a reserved connection's handler calls execute on a connection the
    // pool has not (re)connected; postgres.js itself only executes with a socket. Truthy: those
    // handlers would otherwise move the connection to the `full` queue, where the pool never
    // connects it again.
    patched: (marker) =>
      "    if (terminated)\n      return queryError(q, Errors.connection('CONNECTION_DESTROYED', options))\n" +
      `    ${marker} if (!socket) return (queryError(q, Errors.connection('CONNECTION_CLOSED', options)), true)\n`,
  },
  {
    name: 'porsager/postgres#1215 pending-write guard',
    original: '    incomings = null\n    clearImmediate(nextWriteTimer)\n',
    // Cancelling the flush is not enough: a nextWriteTimer left set keeps write() from ever
    // scheduling another, and the bytes left in chunk would precede the next startup message.
    patched: (marker) =>
      `    incomings = null\n    clearImmediate(nextWriteTimer)\n    ${marker} chunk = nextWriteTimer = null\n`,
  },
  {
    name: 'porsager/postgres#1215 session-state guard',
    original:
      "    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))\n",
    // After a socket error, error() has rejected what was pending then, but a query issued
    // between the 'error' and the 'close' events (sql.begin's ROLLBACK) is still queued here.
    patched: (marker) =>
      "    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))\n" +
      `    ${marker} query && queryError(query, Errors.connection('CONNECTION_CLOSED', options)); while (sent.length) queryError(sent.shift(), Errors.connection('CONNECTION_CLOSED', options)); query = results = errorResponse = final = null, result = new Result()\n`,
  },
].map((g) => ({ ...g, marker: `/* datasync-ingest: ${g.name} */` }));

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
let guardedFiles = 0;
for (const rel of ['src/connection.js', 'cjs/src/connection.js', 'cf/src/connection.js']) {
  const file = join(root, rel);
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    continue; // this build of postgres does not ship that flavour
  }
  let changed = false;
  let complete = true;
  for (const guard of GUARDS) {
    if (text.includes(guard.marker)) continue;
    if (!text.includes(guard.original)) {
      complete = false;
      problems.push(
        `${file}: the code for the ${guard.name} was not found (postgres ${version}). If this version fixed it upstream, ` +
          'remove that guard from scripts/patch-postgres.mjs (and the script with its postinstall entry once none is left); ' +
          'otherwise update its `original` text.',
      );
      continue;
    }
    if (check) {
      complete = false;
      problems.push(`${file}: no ${guard.name}; run \`node scripts/patch-postgres.mjs\` (npm ci does it)`);
      continue;
    }
    text = text.replace(guard.original, guard.patched(guard.marker));
    changed = true;
  }
  if (changed) writeFileSync(file, text);
  if (complete) guardedFiles++;
}
// The Node flavour (src/, used by import and by the Lambda bundle) must be among them.
if (guardedFiles === 0 && problems.length === 0) {
  problems.push(`${root}: no connection.js found to guard (postgres ${version}); update this script`);
}
if (problems.length > 0) {
  console.error(`patch-postgres: ${problems.join('\n')}`);
  process.exit(1);
}

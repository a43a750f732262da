import { SourceMismatchError } from './datasets.ts';
import { InterruptedError } from './interrupted.ts';
import { parseLocalRunArgs, USAGE, UsageError } from './options.ts';
import { resumeCommandOf } from './resume.ts';
import { type LocalRunSummary, runLocal } from './runner.ts';

/**
 * `npm run local`: exit 0 only when the source is complete and the verification holds;
 * 2 for bad options; 130 when interrupted; 1 otherwise. Every failure is one clear line, and
 * under --json every exit ends with a JSON line.
 */
// The AWS SDK prints a 9-line notice on Node < 22 (its future releases will need 22); this
// project supports Node 20, so the notice would only make a newcomer think the setup is broken.
// The variable is the one @aws-sdk/core reads (emitWarningIfUnsupportedVersion).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** npm forwards the terminal's SIGINT to node, which then sees one Ctrl-C twice within a few ms. */
export const FORCE_AFTER_MS = 1000;

const argv = process.argv.slice(2);
const wantsJson = argv.includes('--json');

function fail(name: string, message: string, code: number): number {
  process.stderr.write(`error: ${message}\n`);
  const status = code === 130 ? 'interrupted' : 'failed';
  if (wantsJson) process.stdout.write(`${JSON.stringify({ status, error: { name, message } })}\n`);
  return code;
}

async function main(): Promise<number> {
  let options: ReturnType<typeof parseLocalRunArgs>;
  try {
    options = parseLocalRunArgs(argv);
  } catch (error) {
    if (error instanceof UsageError) return fail(error.name, error.message, 2);
    throw error;
  }
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (argv.some((a) => a === '--api-key' || a.startsWith('--api-key='))) {
    // npm prints the script's command line (`> tsx local/run/cli.ts --api-key ...`) unless -s.
    process.stderr.write(
      "warning: a key given as --api-key is visible in the shell history, in the process list and in npm's banner " +
        '(unless npm run -s); set DATASYNC_API_KEY instead\n',
    );
  }

  const controller = new AbortController();
  // Until the source has a checkpoint (connecting, migrating, checking the API) a Ctrl-C stops at
  // once and there is nothing to resume; a resume hint then would only mislead.
  let resumable = false;
  let firstSignalAt: number | null = null;
  const onSignal = (signal: string) => {
    const now = Date.now();
    if (firstSignalAt === null) {
      firstSignalAt = now;
      process.stderr.write(
        resumable
          ? `\n${signal}: stopping after the current step; nothing stored is lost (Ctrl-C again to stop at once)\n`
          : `\n${signal}: stopping\n`,
      );
      controller.abort();
      return;
    }
    // The same Ctrl-C delivered twice (by the terminal and by npm) is not a request to force.
    if (now - firstSignalAt < FORCE_AFTER_MS) return;
    process.stderr.write(
      resumable
        ? `\nstopped at once: every page is stored whole or not at all; run \`${resumeCommand()}\` to resume\n`
        : '\nstopped at once: nothing was written by this run, so there is nothing to resume\n',
    );
    if (wantsJson) {
      process.stdout.write(
        `${JSON.stringify({ status: 'interrupted', error: { name: 'Interrupted', message: `forced by a second ${signal}` } })}\n`,
      );
    }
    process.exit(130);
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  const mode =
    options.progress === 'auto'
      ? process.stdout.isTTY && !options.json
        ? 'tty'
        : 'lines'
      : options.progress;
  let summary: LocalRunSummary;
  try {
    summary = await runLocal(options, {
      out: (t) => process.stdout.write(t),
      err: (t) => process.stderr.write(t),
      progressMode: mode,
      signal: controller.signal,
      onResumable: () => {
        resumable = true;
      },
    });
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    // One line: messages of our own errors already say what to do.
    const code = e instanceof SourceMismatchError ? 2 : e instanceof InterruptedError ? 130 : 1;
    return fail(e.name, e.message.replace(/\s*\n\s*/g, ' '), code);
  }

  printSummary(summary);
  if (options.json) process.stdout.write(`${JSON.stringify(jsonSummary(summary))}\n`);
  if (summary.status === 'interrupted') return 130;
  return summary.status === 'complete' && summary.verified ? 0 : 1;
}

/** The command the user typed, to resume with, secrets masked (resumeCommandOf). */
function resumeCommand(): string {
  return resumeCommandOf(argv);
}

function printSummary(s: LocalRunSummary): void {
  const n = (v: number) => v.toLocaleString('en-US');
  const lines = [
    `status: ${s.status}${s.alreadyComplete ? ' (already complete before this run)' : ''}`,
    `events stored: ${n(s.events)} (distinct ids ${n(s.distinctIds)})${s.expectedEvents !== null ? `, upstream holds ${n(s.expectedEvents)} valid` : ''}`,
    `duplicates skipped: ${n(s.duplicatesSkipped)}, rejected rows: ${n(s.rejected)}${s.conflicts > 0 ? `, conflicting duplicates: ${n(s.conflicts)} (table event_conflicts)` : ''}`,
    `pages: ${n(s.pages)}, requests: ${n(s.requests)}, rate-limited: ${n(s.rateLimited)}, executions: ${s.executions}, seconds: ${s.seconds}`,
    `chains: ${describeChainMode(s)}`,
  ];
  if (s.topUp) {
    const late =
      s.topUp.lateBeyondLookback > 0 ? ` (${n(s.topUp.lateBeyondLookback)} late beyond the lookback)` : '';
    const mark = s.topUp.highWaterMark ? `, high-water mark ${s.topUp.highWaterMark}` : '';
    lines.push(`top-up: +${n(s.topUp.newEvents)} events${late} in ${n(s.topUp.requests)} request(s)${mark}`);
  }
  // Only a run that ended has something to verify: an interrupted one is incomplete by design.
  if (s.status !== 'interrupted') lines.push(`verification: ${s.verified ? 'OK' : 'FAILED'}`);
  // The figures go to stdout; stderr gets the one line that says what went wrong and what to do.
  process.stdout.write(`${lines.join('\n')}\n`);
  const logHint = s.logFile ? `; the log is ${s.logFile}` : '';
  if (s.error) process.stderr.write(`error: ${s.error.name}: ${s.error.message}${logHint}\n`);
  else if (s.status === 'interrupted' && s.pages === 0) {
    process.stdout.write(
      `interrupted before the first page was stored: nothing to resume; \`${resumeCommand()}\` starts the run again\n`,
    );
  } else if (s.status === 'interrupted') {
    const of = s.expectedEvents !== null ? ` of ${n(s.expectedEvents)}` : '';
    process.stdout.write(
      `interrupted: ${n(s.events)}${of} events are stored and checkpointed; run \`${resumeCommand()}\` to resume from there\n`,
    );
  } else if (s.status !== 'complete' || !s.verified)
    process.stderr.write(
      s.alreadyComplete
        ? `error: source "${s.sourceId}" does not verify (${s.problem ?? 'the checkpoint is not complete'}); add --reset to ingest it anew\n`
        : `error: the run ended ${s.status} and did not verify (${s.problem ?? 'the checkpoint is not complete'})${logHint}\n`,
    );
}

/** How the source was read: `3 (chains)`, `1 (one chain requested (CHAINS=1))`, `1 (fell back: ...)`. */
function describeChainMode(s: LocalRunSummary): string {
  if (s.chainMode === 'fallback') return `1 (fell back to one chain: ${s.chainNote ?? 'no reason recorded'})`;
  if (s.chainMode === null) return '1 (not planned: the source was read as one chain)';
  return `${s.chains}${s.chainNote ? ` (${s.chainNote})` : ''}`;
}

function jsonSummary(s: LocalRunSummary) {
  return {
    status: s.status,
    sourceId: s.sourceId,
    events: s.events,
    distinctIds: s.distinctIds,
    duplicatesSkipped: s.duplicatesSkipped,
    rejected: s.rejected,
    conflicts: s.conflicts,
    pages: s.pages,
    requests: s.requests,
    rateLimited: s.rateLimited,
    executions: s.executions,
    invocations: s.invocations,
    chains: s.chains,
    chainMode: s.chainMode,
    chainNote: s.chainNote,
    seconds: s.seconds,
    expectedEvents: s.expectedEvents,
    verified: s.verified,
    topUp: s.topUp ?? null,
    ...(s.error
      ? { error: s.error }
      : s.status === 'failed' || (s.status === 'complete' && !s.verified)
        ? { error: { name: 'VerificationFailed', message: s.problem ?? 'the checkpoint is not complete' } }
        : {}),
  };
}

main().then(
  // Exit explicitly: a detached embedded PostgreSQL or a keep-alive socket must not hold the process.
  (code) => process.exit(code),
  (error: unknown) => {
    const e = error instanceof Error ? error : new Error(String(error));
    process.exit(
      fail(e.name, `${e.message} (an unexpected error: ${e.stack?.split('\n')[1]?.trim() ?? ''})`, 1),
    );
  },
);

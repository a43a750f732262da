import { parseLocalRunArgs, USAGE, UsageError } from './options.ts';
import { type LocalRunSummary, runLocal } from './runner.ts';

/**
 * `npm run local`: exit 0 only when the source is complete and the verification holds;
 * 2 for bad options; 130 when interrupted; 1 otherwise. Every failure is one clear line.
 */
// The AWS SDK inside aws-local-stepfunctions warns on every run that Node 20 support ends;
// that is noise here (the runner supports Node 20), while other warnings still show.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (/node >=22|upgrade to node/i.test(w.message)) return;
  process.stderr.write(`${w.name}: ${w.message}\n`);
});

async function main(): Promise<number> {
  let options: ReturnType<typeof parseLocalRunArgs>;
  try {
    options = parseLocalRunArgs(process.argv.slice(2));
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`error: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }

  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: string) => {
    interrupts++;
    if (interrupts > 1) {
      process.stderr.write('\nforced exit: the checkpoint is consistent; run the same command to resume\n');
      process.exit(130);
    }
    process.stderr.write(`\n${signal}: stopping after the current step (Ctrl-C again to force)\n`);
    controller.abort();
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
    });
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`);
    return 1;
  }

  printSummary(summary);
  if (options.json) process.stdout.write(`${JSON.stringify(jsonSummary(summary))}\n`);
  if (summary.status === 'interrupted') return 130;
  return summary.status === 'complete' && summary.verified ? 0 : 1;
}

function printSummary(s: LocalRunSummary): void {
  const n = (v: number) => v.toLocaleString('en-US');
  const lines = [
    `status: ${s.status}${s.alreadyComplete ? ' (already complete before this run)' : ''}`,
    `events stored: ${n(s.events)} (distinct ids ${n(s.distinctIds)})${s.expectedEvents !== null ? `, upstream holds ${n(s.expectedEvents)} valid` : ''}`,
    `duplicates skipped: ${n(s.duplicatesSkipped)}, rejected rows: ${n(s.rejected)}`,
    `pages: ${n(s.pages)}, requests: ${n(s.requests)}, rate-limited: ${n(s.rateLimited)}, executions: ${s.executions}, seconds: ${s.seconds}`,
    `verification: ${s.verified ? 'OK' : 'FAILED'}`,
  ];
  // The figures go to stdout; stderr gets the one line that says what went wrong and what to do.
  process.stdout.write(`${lines.join('\n')}\n`);
  if (s.error) process.stderr.write(`error: ${s.error.name}: ${s.error.message}\n`);
  else if (s.status === 'interrupted')
    process.stderr.write('interrupted: run the same command again to resume from the checkpoint\n');
  else if (s.status !== 'complete' || !s.verified)
    process.stderr.write(
      s.duplicatesSkipped > 0 && s.events < (s.expectedEvents ?? 0)
        ? `error: ${s.expectedEvents! - s.events} of the upstream's events were already stored under another source (rows are keyed by event id alone); ingest into a separate database or --reset that source\n`
        : `error: the run ended ${s.status} and the stored rows do not match the checkpoint; see the log in --data-dir/logs\n`,
    );
}

function jsonSummary(s: LocalRunSummary) {
  return {
    status: s.status,
    sourceId: s.sourceId,
    events: s.events,
    distinctIds: s.distinctIds,
    duplicatesSkipped: s.duplicatesSkipped,
    rejected: s.rejected,
    pages: s.pages,
    requests: s.requests,
    rateLimited: s.rateLimited,
    executions: s.executions,
    seconds: s.seconds,
    expectedEvents: s.expectedEvents,
    verified: s.verified,
    ...(s.error ? { error: `${s.error.name}: ${s.error.message}` } : {}),
  };
}

main().then(
  // Exit explicitly: a detached embedded PostgreSQL or a keep-alive socket must not hold the process.
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`error: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);

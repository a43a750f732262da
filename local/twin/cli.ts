import { describeSummary, parseTwinArgs, TWIN_USAGE, UsageError } from './options.ts';
import { runTwin } from './runner.ts';

/**
 * `npm run twin`: the deployed bytes end to end on this machine (docs/local.md#the-twin). Exit 0
 * only when every event is stored exactly once; 2 for bad options; 1 otherwise.
 */
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

async function main(argv: string[]): Promise<number> {
  let options: ReturnType<typeof parseTwinArgs>;
  try {
    options = parseTwinArgs(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`error: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  if (options === 'help') {
    process.stdout.write(`${TWIN_USAGE}\n`);
    return 0;
  }
  const { json, ...twin } = options;
  // Ctrl-C: the steps in flight end, then the sandboxes, the servers and the throwaway PostgreSQL stop.
  const controller = new AbortController();
  const onSignal = (signal: string) => {
    if (controller.signal.aborted) return;
    process.stderr.write(`\n${signal}: stopping after the steps in flight, then the twin's servers\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const summary = await runTwin({
      ...twin,
      signal: controller.signal,
      out: (line) => process.stdout.write(`${line}\n`),
    });
    process.stdout.write(`${describeSummary(summary)}\n`);
    if (json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    return summary.status === 'interrupted' ? 130 : summary.exact ? 0 : 1;
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    process.stderr.write(`error: ${e.name}: ${e.message}\n`);
    if (json)
      process.stdout.write(
        `${JSON.stringify({ status: 'failed', error: { name: e.name, message: e.message } })}\n`,
      );
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => process.exit(code));

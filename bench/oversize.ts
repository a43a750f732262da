import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runChildScript } from './child.ts';
import { positiveInt, round1 } from './lib.ts';

const MB = 2 ** 20;

/**
 * Peak RSS of one events request whose answer is a 200 MB page (valid JSON, padded with
 * whitespace) or a body that never ends, with the client's byte cap and without it, side by side
 * in one run. Each request runs alone in a child process, so its `process.resourceUsage().maxRSS`
 * is the request's own; the parent hosts the simulators, which stream the padding and hold none
 * of it. `normal` is one ordinary 5000-event page, for scale.
 */
export async function run(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: { mb: { type: 'string', default: '200' } },
    allowPositionals: false,
  });
  const mb = positiveInt(values.mb, '--mb');
  const { startSimulator } = await import('#local/simulator/index.ts');
  const { MAX_RESPONSE_BYTES } = await import('#shared/upstream/client.ts');
  const base = { port: 0, latencyMs: 0, rateLimit: 0, events: 5000, cacheTtlSeconds: 0 } as const;
  const normal = await startSimulator(base);
  const oversize = await startSimulator({ ...base, oversizeBodyRate: 1, oversizeBodyBytes: mb * MB });
  const endless = await startSimulator({ ...base, endlessBodyRate: 1 });
  try {
    console.log(
      `oversize: a ${mb} MB page and an endless body, capped at ${MAX_RESPONSE_BYTES} bytes and uncapped`,
    );
    const cases: [string, string, string][] = [
      ['normal page, capped', normal.url, 'capped'],
      [`${mb} MB page, capped`, oversize.url, 'capped'],
      ['endless body, capped', endless.url, 'capped'],
      [`${mb} MB page, uncapped`, oversize.url, 'uncapped'],
    ];
    const results: Record<string, unknown>[] = [];
    for (const [label, url, mode] of cases) {
      const r = await runChildScript('bench/oversize.ts', [
        '--child',
        mode,
        '--api-url',
        url,
        '--api-key',
        normal.options.apiKey,
      ]);
      console.log(`oversize: ${label}: maxRSS ${r.maxRssMb} MB (${r.outcome}, ${r.ms} ms)`);
      results.push({ case: label, ...r });
    }
    const [n, capped, endlessCapped, uncapped] = results.map((r) => Number(r.maxRssMb));
    return {
      bench: 'oversize',
      pageMb: mb,
      capBytes: MAX_RESPONSE_BYTES,
      normalPageMaxRssMb: n,
      oversizeCappedMaxRssMb: capped,
      endlessCappedMaxRssMb: endlessCapped,
      oversizeUncappedMaxRssMb: uncapped,
      cases: results,
    };
  } finally {
    await Promise.all([normal.close(), oversize.close(), endless.close()]);
  }
}

/** The child: one fetchEvents with the client as shipped (capped) or with the cap lifted (uncapped). */
async function child(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      child: { type: 'string' },
      'api-url': { type: 'string' },
      'api-key': { type: 'string' },
    },
    allowPositionals: false,
  });
  const { createDataSyncClient } = await import('#shared/upstream/client.ts');
  const client = createDataSyncClient({
    baseUrl: values['api-url'] as string,
    apiKey: values['api-key'] as string,
    timeoutMs: 120_000,
    ...(values.child === 'uncapped' ? { maxResponseBytes: 2 ** 32 } : {}),
  });
  const started = Date.now();
  let outcome: string;
  try {
    const r = await client.fetchEvents({ limit: 5000 });
    outcome = `read ${round1(r.bytes / MB)} MB, ${r.page.data.length} events`;
  } catch (error) {
    outcome = `${(error as Error).name}: ${(error as Error).message.slice(0, 90)}…`;
  }
  return {
    mode: values.child,
    outcome,
    ms: Date.now() - started,
    // resourceUsage().maxRSS is in kilobytes.
    maxRssMb: round1((process.resourceUsage().maxRSS * 1024) / MB),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  const result = argv.includes('--child') ? await child(argv) : await run(argv);
  console.log(JSON.stringify(result));
}

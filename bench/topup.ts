import { appendFile, mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { growthFile } from '#local/run/growth-log.ts';
import { localRunOptionsSchema } from '#local/run/options.ts';
import { runLocal } from '#local/run/runner.ts';
import {
  openTarget,
  positiveInt,
  postgresVersion,
  quietIo,
  readPageLogs,
  round1,
  round3,
  tempDataDir,
} from './lib.ts';

/**
 * A top-up over a large gap: a small backfill, then the upstream grows by `--gap-pages` pages
 * (newer events, and some late ones inside the lookback), and the same run again tops it up.
 * The gap is planned like a backfill (chains when the latency calls for them, the shared pacer),
 * so the figure is elapsed over the same bound as `bench floor`: the last of P requests cannot
 * start before (ceil(P/10) - 1) x W after the first and takes its latency L, nor before
 * (P - 1) x spacing + L; P = the pages the gap needs, ceil(growth / page size).
 *
 * Time-scaled like `bench floor` (W / 10 / scale = --request-floor-ms, 500-event pages whose
 * latency is scaled to a live 5000-event page's), window 20 s fixed, latency 3.5 s: three chains.
 */
export async function run(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      'gap-pages': { type: 'string', default: '200' },
      'page-size': { type: 'string', default: '500' },
      'request-floor-ms': { type: 'string', default: '100' },
      'latency-ms': { type: 'string', default: '3500' },
      chains: { type: 'string', default: 'auto' },
    },
    allowPositionals: false,
  });
  const gapPages = positiveInt(values['gap-pages'], '--gap-pages');
  const pageSize = positiveInt(values['page-size'], '--page-size');
  const requestFloorMs = positiveInt(values['request-floor-ms'], '--request-floor-ms');
  const latencyMs = Number(values['latency-ms']);
  const chains = values.chains === 'auto' ? 'auto' : positiveInt(values.chains, '--chains');
  const limit = 10;
  const windowSeconds = 20;
  const minSpacingMs = 2200;
  const timeScale = (windowSeconds * 1000) / limit / requestFloorMs;
  const late = Math.min(50, pageSize);
  const growth = { newer: gapPages * pageSize - late, lateWithin: late, lookbackMs: 600_000 };
  const added = growth.newer + growth.lateWithin;

  const target = await openTarget('dsi_bench_topup');
  const data = await tempDataDir('topup');
  try {
    const options = localRunOptionsSchema.parse({
      databaseUrl: target.url,
      apiUrl: null,
      apiKey: null,
      events: 4 * pageSize,
      windowSeconds,
      rateLimit: limit,
      windowMode: 'fixed',
      timeScale,
      latencyMs: (latencyMs * 5000) / pageSize,
      chaos: false,
      seed: 1,
      sourceId: 'topup',
      reset: true,
      json: false,
      maxIterations: 1000,
      chains,
      minSpacingMs,
      dataDir: data.dir,
      progress: 'none',
      follow: false,
      everyMs: 300_000,
      lookbackMs: 900_000,
      growRate: 0,
      growLateShare: 0,
    });
    console.log(
      `topup: backfill ${options.events} events, then a gap of ${gapPages} pages of ${pageSize} (${added} events, ${late} late), ` +
        `${limit} requests per ${windowSeconds} s fixed, latency ${latencyMs} ms, time-scale ${round3(timeScale)}, into ${target.label}`,
    );
    const backfill = await runLocal(
      options,
      quietIo(() => false, pageSize),
    );
    if (backfill.status !== 'complete' || !backfill.verified)
      throw new Error(`topup: the backfill ended ${backfill.status}`);
    const file = growthFile(data.dir, options);
    await mkdir(resolve(file, '..'), { recursive: true });
    await appendFile(file, `${JSON.stringify(growth)}\n`);
    const startedAt = Date.now();
    const summary = await runLocal(
      { ...options, reset: false },
      quietIo(() => false, pageSize),
    );
    if (summary.status !== 'complete' || !summary.verified || summary.topUp?.newEvents !== added) {
      throw new Error(
        `topup: the top-up ended ${summary.status} (verified ${summary.verified}, ${summary.topUp?.newEvents ?? 0} of ${added} new events stored${summary.problem ? `: ${summary.problem}` : ''})`,
      );
    }
    const logs = (await readPageLogs(resolve(data.dir, 'logs', 'topup.log'))).filter(
      (l) => l.atMs >= startedAt,
    );
    const firstStart = Math.min(...logs.map((l) => l.atMs - l.persistMs - l.upstreamLatencyMs));
    const elapsedSeconds = (Math.max(...logs.map((l) => l.atMs)) - firstStart) / 1000;
    const needed = Math.ceil(added / pageSize);
    const rateBound = ((Math.ceil(needed / limit) - 1) * windowSeconds + latencyMs / 1000) / timeScale;
    const spacingBound = ((needed - 1) * minSpacingMs + latencyMs) / 1000 / timeScale;
    const bound = Math.max(rateBound, spacingBound);
    const result = {
      bench: 'topup',
      gapPages,
      pageSize,
      events: added,
      stored: summary.topUp.newEvents,
      requests: summary.topUp.requests,
      pagesNeeded: needed,
      chains: summary.chains,
      chainMode: summary.chainMode,
      rateLimited: summary.rateLimited,
      elapsedSeconds: round1(elapsedSeconds),
      boundSeconds: round1(bound),
      boundBy: rateBound >= spacingBound ? 'rate limit' : 'min spacing',
      ratioToBound: round3(elapsedSeconds / bound),
      timeScale: round3(timeScale),
      postgres: await postgresVersion(target.url),
    };
    console.log(
      `  ${added} events in ${summary.topUp.requests} requests over ${summary.chains} chain(s) (${summary.chainMode}): ` +
        `${result.elapsedSeconds} s vs bound ${result.boundSeconds} s (${result.boundBy}) = ${result.ratioToBound.toFixed(3)} x, ${summary.rateLimited} x 429`,
    );
    return result;
  } finally {
    await target.drop();
    if (!process.env.KEEP) await data.remove();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await run(process.argv.slice(2));
  console.log(JSON.stringify(result));
}

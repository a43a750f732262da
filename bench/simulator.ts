/*
 * Simulator throughput over real HTTP: follows the cursor with limit=5000 and no rate limit,
 * reading every body in full, for a fixed number of pages. Server and client share one process,
 * so the figure is a floor for a simulator running on its own. The client reads each body in
 * full but does not parse it.
 *
 *   npm run bench -- simulator [--pages 60] [--events 3000000] [--chaos]
 *   npx tsx bench/simulator.ts [same options]        (the measurement alone, in this process)
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startSimulator } from '#local/simulator/index.ts';
import { runChildScript } from './child.ts';
import type { BenchResult } from './result.ts';

/**
 * The registered entry: runs this file in a child process, so the CPU time it reports is the
 * simulator's and its client's, not the bench runner's.
 */
export async function run(args: string[]): Promise<BenchResult> {
  const result = await runChildScript('bench/simulator.ts', args);
  return { ...result, bench: 'simulator' };
}

async function measure(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      pages: { type: 'string', default: '60' },
      events: { type: 'string', default: '3000000' },
      chaos: { type: 'boolean', default: false },
    },
  });
  const pages = Number(values.pages);
  const events = Number(values.events);
  if (!Number.isInteger(pages) || pages < 1 || !Number.isInteger(events) || events < 1) {
    console.error('bench simulator: --pages and --events must be positive integers, e.g. --pages 60');
    process.exit(2);
  }

  const sim = await startSimulator({
    port: 0,
    latencyMs: 0,
    events,
    rateLimit: 0,
    chaos: values.chaos,
    transientErrorRate: 0,
    truncatedBodyRate: 0,
  });
  try {
    const headers = { 'X-API-Key': sim.options.apiKey };
    let cursor: string | null = null;
    let bytes = 0;
    let served = 0;
    // One warm-up page so JIT compilation is not measured.
    await (await fetch(`${sim.url}/events?limit=5000`, { headers })).text();
    const started = performance.now();
    const cpuStart = process.cpuUsage();
    for (let p = 0; p < pages; p++) {
      const url = `${sim.url}/events?limit=5000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const res = await fetch(url, { headers });
      const text = await res.text();
      if (res.status !== 200)
        throw new Error(`bench: page ${p} answered ${res.status}: ${text.slice(0, 200)}`);
      bytes += text.length;
      // The cursor and count sit in the last few hundred bytes: parsing 1.7 MB of JSON here would
      // measure the client, not the simulator.
      const tail = text.slice(-600);
      served += Number(/"returned":(\d+)/.exec(tail)?.[1] ?? 0);
      cursor = /"nextCursor":"([^"]+)"/.exec(tail)?.[1] ?? null;
    }
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuStart);
    // CPU time is less sensitive than wall time to other work on a shared machine.
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const cpuPagesPerSecond = Math.round((pages / cpuSeconds) * 10) / 10;
    const pagesPerSecond = Math.round((pages / seconds) * 10) / 10;
    console.log(
      `${pages} pages, ${served.toLocaleString('en-US')} events, ${(bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s: ${pagesPerSecond} pages/s (${cpuPagesPerSecond} pages per CPU-second, server and client together)`,
    );
    console.log(
      JSON.stringify({
        bench: 'simulator',
        pagesPerSecond,
        cpuPagesPerSecond,
        pages,
        events: served,
        seconds,
      }),
    );
  } finally {
    await sim.close();
  }
}

// Run directly (by runChildScript or by hand) it measures; imported by the bench runner it only exports run.
if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) {
  await measure(process.argv.slice(2));
}

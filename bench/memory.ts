import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { StepOutput } from '#shared/step/index.ts';
import { runChildScript } from './child.ts';
import { openTarget, positiveInt, postgresVersion, round1 } from './lib.ts';

const PAGE_SIZE = 5000;
const LAMBDA_MEMORY_MB = 512;
const TARGET_MB = 256;
const MB = 2 ** 20;

/**
 * Peak memory of the fetch-page handler storing 5000-event pages one after another, as a warm
 * Lambda container would. The handler runs alone in a child process (this process hosts the
 * unthrottled simulator and creates the database), so the figures are the handler's own:
 * `process.memoryUsage().rss` sampled every 5 ms and after every page, and the kernel's
 * `process.resourceUsage().maxRSS` high-water mark.
 */
export async function run(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: { pages: { type: 'string', default: '200' } },
    allowPositionals: false,
  });
  const pages = positiveInt(values.pages, '--pages');
  const { startSimulator } = await import('#local/simulator/index.ts');
  const { createSql } = await import('#shared/db/client.ts');
  const { runMigrations } = await import('#shared/db/migrate.ts');
  const target = await openTarget('dsi_bench_memory');
  const sim = await startSimulator({ port: 0, latencyMs: 0, events: pages * PAGE_SIZE, rateLimit: 0 });
  try {
    const sql = createSql(target.url, { applicationName: 'datasync-bench-memory' });
    try {
      await runMigrations(sql);
    } finally {
      await sql.end({ timeout: 5 });
    }
    const postgres = await postgresVersion(target.url);
    console.log(
      `memory: handler in a child process storing ${pages} pages of ${PAGE_SIZE} events from ${sim.url} into ${target.label}`,
    );
    const child = await runChildScript('bench/memory.ts', [
      '--child',
      '--api-url',
      sim.url,
      '--api-key',
      sim.options.apiKey,
      '--database-url',
      target.url,
      '--pages',
      String(pages),
    ]);
    const peakRssMb = Number(child.peakRssMb);
    const maxRssMb = Number(child.maxRssMb);
    const worst = Math.max(peakRssMb, maxRssMb);
    const verdict =
      worst < TARGET_MB
        ? `under the ${TARGET_MB} MB target; the stack's ${LAMBDA_MEMORY_MB} MB leaves ${Math.round(LAMBDA_MEMORY_MB - worst)} MB of headroom`
        : `over the ${TARGET_MB} MB target`;
    console.log(`memory: peak RSS ${peakRssMb} MB sampled, maxRSS ${maxRssMb} MB: ${verdict}`);
    return { bench: 'memory', ...child, lambdaMemoryMb: LAMBDA_MEMORY_MB, postgres };
  } finally {
    await sim.close();
    await target.drop();
  }
}

/** The child: the production handler, invoked page after page like the state machine does. */
async function child(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      child: { type: 'boolean' },
      'api-url': { type: 'string' },
      'api-key': { type: 'string' },
      'database-url': { type: 'string' },
      pages: { type: 'string' },
    },
    allowPositionals: false,
  });
  const pages = positiveInt(values.pages, '--pages');
  const { createHandler } = await import('#functions/fetch-page/handler.ts');
  const handler = createHandler({
    env: {
      DATASYNC_API_URL: values['api-url'],
      DATASYNC_API_KEY: values['api-key'],
      DATABASE_URL: values['database-url'],
      MIN_REQUEST_SPACING_MS: '0',
      PAGE_SIZE: String(PAGE_SIZE),
    },
    logger: { info: () => {}, warn: () => {}, error: () => {} },
    metrics: { add: () => {}, flush: () => {} },
  });
  const baselineRss = process.memoryUsage().rss;
  let peakRss = baselineRss;
  let peakHeap = process.memoryUsage().heapUsed;
  const sample = () => {
    const m = process.memoryUsage();
    if (m.rss > peakRss) peakRss = m.rss;
    if (m.heapUsed > peakHeap) peakHeap = m.heapUsed;
  };
  const sampler = setInterval(sample, 5);
  let stored = 0;
  let rssAfterFirstPage = 0;
  try {
    for (let i = 0; i < pages; i++) {
      // A page of chain 0 (no Plan task: the source reads as one chain).
      const out = (await handler({
        executionId: 'bench-memory',
        state: { sourceId: 'bench-memory', iteration: i },
      })) as StepOutput;
      sample();
      if (i === 0) rssAfterFirstPage = process.memoryUsage().rss;
      stored += out.page.inserted;
      if ((i + 1) % 50 === 0)
        console.log(
          `page ${i + 1}/${pages}: ${stored.toLocaleString('en-US')} events stored, rss ${round1(process.memoryUsage().rss / MB)} MB, peak ${round1(peakRss / MB)} MB`,
        );
      if (out.done) break;
    }
  } finally {
    clearInterval(sampler);
    await handler.close();
  }
  if (stored !== pages * PAGE_SIZE)
    throw new Error(`memory: the handler stored ${stored} events, expected ${pages * PAGE_SIZE}`);
  return {
    pages,
    events: stored,
    baselineRssMb: round1(baselineRss / MB),
    rssAfterFirstPageMb: round1(rssAfterFirstPage / MB),
    peakRssMb: round1(peakRss / MB),
    // resourceUsage().maxRSS is in kilobytes.
    maxRssMb: round1((process.resourceUsage().maxRSS * 1024) / MB),
    peakHeapUsedMb: round1(peakHeap / MB),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  const result = argv.includes('--child') ? await child(argv) : await run(argv);
  console.log(JSON.stringify(result));
}

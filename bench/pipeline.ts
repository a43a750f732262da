import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { localRunOptionsSchema } from '#local/run/options.ts';
import { runLocal } from '#local/run/runner.ts';
import { startSimulator } from '#local/simulator/index.ts';
import { normalisePage } from '#shared/upstream/normalise.ts';
import { parseEventsBody } from '#shared/upstream/schemas.ts';
import {
  mean,
  openTarget,
  percentile,
  positiveInt,
  postgresVersion,
  quietIo,
  readPageLogs,
  round1,
  tempDataDir,
} from './lib.ts';

const PAGE_SIZE = 5000;

/**
 * End-to-end throughput with no rate limit (simulator rateLimit 0, no latency, min spacing 0):
 * `runLocal` runs the CDK-synthesized state machine with the real handler in-process against the
 * simulator and PostgreSQL (DATABASE_URL, else a throw-away database dropped afterwards).
 *
 * The per-page breakdown comes from the step's own 'page stored' log lines, so production code
 * runs unchanged: fetch = upstreamLatencyMs (request until the body is read, simulator included),
 * persist = persistMs (the page's transaction). Parse+validate (decode, JSON.parse, zod, normalise)
 * is not logged, so it is timed separately on --sample pages from an identical simulator with the
 * same functions the client and step call. stateMachine = the rest of the mean page period
 * (ASL interpreter, lease acquisition, Choice/Wait(0), logging).
 */
export async function run(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      events: { type: 'string', default: '1000000' },
      sample: { type: 'string', default: '20' },
    },
    allowPositionals: false,
  });
  const events = positiveInt(values.events, '--events');
  const samplePages = positiveInt(values.sample, '--sample');
  const target = await openTarget('dsi_bench_pipeline');
  const data = await tempDataDir('pipeline');
  const sourceId = 'bench-pipeline';
  try {
    const postgres = await postgresVersion(target.url);
    console.log(
      `pipeline: ${events.toLocaleString('en-US')} events, pages of ${PAGE_SIZE}, no rate limit, into ${target.label} (PostgreSQL ${postgres})`,
    );
    const options = localRunOptionsSchema.parse({
      databaseUrl: target.url,
      apiUrl: null,
      apiKey: null,
      events,
      windowSeconds: 20,
      rateLimit: 0,
      windowMode: 'fixed',
      timeScale: 1,
      latencyMs: 0,
      chaos: false,
      seed: 1,
      sourceId,
      reset: true,
      json: false,
      maxIterations: 1000,
      // One chain: the figure is the page path's own throughput, comparable across versions.
      chains: 1,
      minSpacingMs: 0,
      dataDir: data.dir,
      progress: 'none',
    });
    const summary = await runLocal(
      options,
      quietIo((l) => l.startsWith('simulator:')),
    );
    if (summary.status !== 'complete' || !summary.verified) {
      throw new Error(
        `pipeline: the run ended ${summary.status} (verified ${summary.verified}, ${summary.events} of ${summary.expectedEvents} events` +
          `${summary.error ? `, ${summary.error.name}: ${summary.error.message}` : ''}); see ${data.dir}/logs/${sourceId}.log`,
      );
    }
    const logs = await readPageLogs(resolve(data.dir, 'logs', `${sourceId}.log`));
    const first = logs[0];
    const last = logs.at(-1);
    if (!first || !last) throw new Error(`pipeline: no 'page stored' lines in ${data.dir}/logs`);
    const startMs = first.atMs - first.persistMs - first.upstreamLatencyMs;
    const seconds = (last.atMs - startMs) / 1000;
    const periodMs = (last.atMs - startMs) / logs.length;
    const fetchMs = mean(logs.map((l) => l.upstreamLatencyMs));
    const persistMs = mean(logs.map((l) => l.persistMs));
    const parseValidateMs = await timeParseValidate(events, samplePages);
    const stateMachineMs = periodMs - fetchMs - persistMs - parseValidateMs;
    const result = {
      bench: 'pipeline',
      events: summary.events,
      pages: logs.length,
      eventsPerSecond: Math.round(summary.events / seconds),
      seconds: round1(seconds),
      wallSeconds: summary.seconds,
      msPerPage: {
        total: round1(periodMs),
        fetch: round1(fetchMs),
        parseValidate: round1(parseValidateMs),
        persist: round1(persistMs),
        stateMachine: round1(stateMachineMs),
      },
      persistP95Ms: round1(
        percentile(
          logs.map((l) => l.persistMs),
          95,
        ),
      ),
      postgres,
    };
    console.log(
      `pipeline: ${summary.events.toLocaleString('en-US')} events in ${result.seconds} s from first request to last page stored ` +
        `(${result.eventsPerSecond.toLocaleString('en-US')} events/s; ${summary.seconds} s wall with start-up and verification)`,
    );
    console.log(
      `pipeline: per page ${result.msPerPage.total} ms = fetch ${result.msPerPage.fetch} + parse+validate ${result.msPerPage.parseValidate} ` +
        `(sampled on ${samplePages} pages) + persist ${result.msPerPage.persist} (p95 ${result.persistP95Ms}) + state machine and the rest ${result.msPerPage.stateMachine}`,
    );
    return result;
  } finally {
    await target.drop();
    await data.remove();
  }
}

/**
 * What the client does after the body is read (decode, JSON.parse, zod) and the step's
 * normalisation, on real pages from a simulator serving the same data set. The first page is a
 * warm-up so JIT compilation is not counted.
 */
async function timeParseValidate(events: number, pages: number): Promise<number> {
  const sim = await startSimulator({ port: 0, latencyMs: 0, events, rateLimit: 0 });
  try {
    const headers = { 'X-API-Key': sim.options.apiKey };
    const durations: number[] = [];
    let cursor: string | null = null;
    for (let p = 0; p <= pages; p++) {
      const url = `${sim.url}/events?limit=${PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const res = await fetch(url, { headers });
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (res.status !== 200) throw new Error(`pipeline: the sampling simulator answered ${res.status}`);
      const t0 = performance.now();
      const page = parseEventsBody(JSON.parse(new TextDecoder().decode(bytes)));
      normalisePage(page.data);
      if (p > 0) durations.push(performance.now() - t0);
      cursor = page.hasMore ? page.nextCursor : null;
      if (!cursor) break;
    }
    return mean(durations);
  } finally {
    await sim.close();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await run(process.argv.slice(2));
  console.log(JSON.stringify(result));
}

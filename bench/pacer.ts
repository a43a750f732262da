import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEFAULT_API_KEY, startSimulator } from '#local/simulator/index.ts';
import { createDb, createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { getPacerState } from '#shared/db/pacer.ts';
import { windowEstimateMs } from '#shared/pacing/shared-pacer.ts';
import {
  openTarget,
  positiveInt,
  postgresVersion,
  round1,
  round3,
  windowConfigs,
  windowLabel,
} from './lib.ts';
import { runChains } from './pacer-sim.ts';

/**
 * How close the shared pacer (shared/db/pacer.ts) paces N concurrent chains to the rate limit:
 * 600 requests through the real pacer row in PostgreSQL against the real simulator over HTTP,
 * for windows of 20, 30 and 60 s, fixed and sliding, without and with 3.5 s upstream latency,
 * with the automatic chain count (ceil(L / spacing) + 1, at most the limit) and with one chain.
 *
 * bound = max(59 W + L, 599 x spacing + L): the 600th request cannot start before 59 windows
 * (or 599 spacings) after the first and takes its latency. elapsed = first send to last answer.
 * Each configuration is time-scaled (window, latency, spacing and margin divided by the scale)
 * so that its bound takes --target-seconds; pages hold 100 events (the simulator's latency is
 * set so that such a page still takes L) so that the figure measures pacing, not the CPU.
 */
const LIMIT = 10;
const ROWS = 100;

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      requests: { type: 'string', default: '600' },
      'target-seconds': { type: 'string', default: '30' },
      'min-spacing-ms': { type: 'string', default: '2200' },
      'margin-ms': { type: 'string', default: '10' },
      only: { type: 'string' },
      'skip-one-chain': { type: 'boolean', default: false },
    },
    allowPositionals: false,
  });
  const requests = positiveInt(values.requests, '--requests');
  const targetSeconds = positiveInt(values['target-seconds'], '--target-seconds');
  const minSpacingMs = positiveInt(values['min-spacing-ms'], '--min-spacing-ms');
  const marginMs = positiveInt(values['margin-ms'], '--margin-ms');
  // --only 20:fixed:0,60:sliding:3500 picks configurations (for trying a change quickly).
  const configs = windowConfigs(values.only);

  const target = await openTarget('dsi_bench_pacer');
  const sql = createSql(target.url, { max: 12, applicationName: 'datasync-bench' });
  console.log(
    `pacer: ${configs.length} configurations x ${requests} requests, ${LIMIT} per window, spacing ${minSpacingMs} ms ` +
      `before scaling, margin ${marginMs} ms real, each scaled so that its bound takes ${targetSeconds} s, into ${target.label}`,
  );
  try {
    await runMigrations(sql);
    const postgres = await postgresVersion(target.url);
    const results: Record<string, unknown>[] = [];
    let run = 0;
    for (const c of configs) {
      const boundUnscaled = Math.max(
        (Math.ceil(requests / LIMIT) - 1) * c.windowSeconds * 1000 + c.latencyMs,
        (requests - 1) * minSpacingMs + c.latencyMs,
      );
      const timeScale = boundUnscaled / (targetSeconds * 1000);
      const auto = Math.min(LIMIT, Math.ceil(c.latencyMs / minSpacingMs) + 1);
      const counts = !values['skip-one-chain'] && auto !== 1 ? [auto, 1] : [auto];
      for (const chains of counts) {
        const sim = await startSimulator({
          port: 0,
          events: 1000,
          rateLimit: LIMIT,
          windowSeconds: c.windowSeconds,
          windowMode: c.windowMode,
          timeScale,
          // The latency option is for a 5000-event page; a page of ROWS takes its share.
          latencyMs: (c.latencyMs * 5000) / ROWS,
          latencyJitterMs: 0,
        });
        const key = `bench-${process.pid}-${run++}`;
        try {
          const out = await runChains({
            db: createDb(sql),
            key,
            eventsUrl: `${sim.url}/events?limit=${ROWS}`,
            apiKey: DEFAULT_API_KEY,
            chains,
            requests,
            minSpacingMs: minSpacingMs / timeScale,
            safetyMarginMs: marginMs,
            maxAheadMs: (c.windowSeconds * 1000) / timeScale,
          });
          const state = await getPacerState(createDb(sql), key);
          const boundMs = boundUnscaled / timeScale;
          let minGap = Number.POSITIVE_INFINITY;
          for (let i = 1; i < out.records.length; i++)
            minGap = Math.min(minGap, out.records[i]!.reservedAtMs - out.records[i - 1]!.reservedAtMs);
          const windowMs = windowEstimateMs(state);
          const entry = {
            config: windowLabel(c),
            chains,
            timeScale: round3(timeScale),
            elapsedSeconds: round3(out.elapsedMs / 1000),
            boundSeconds: round3(boundMs / 1000),
            ratio: round3(out.elapsedMs / boundMs),
            rateLimited: out.rateLimited,
            requests: out.records.length,
            minReservedGapUnscaledMs: round1(minGap * timeScale),
            minSpacingMs,
            windowEstimateUnscaledMs: windowMs === null ? null : round1(windowMs * timeScale),
            headerDelayUnscaledMs:
              state.headerDelayMs === null ? null : round1(state.headerDelayMs * timeScale),
            probe: state.probe.state,
          };
          results.push(entry);
          console.log(
            `  ${windowLabel(c).padEnd(16)} N=${chains} scale ${entry.timeScale}: ${entry.elapsedSeconds} s vs bound ` +
              `${entry.boundSeconds} s = ${entry.ratio.toFixed(3)} x, ${out.rateLimited} x 429 in ${out.records.length}, ` +
              `min gap ${entry.minReservedGapUnscaledMs} ms, W est ${entry.windowEstimateUnscaledMs} ms, ` +
              `header delay ${entry.headerDelayUnscaledMs} ms (probe ${entry.probe})`,
          );
        } finally {
          await sim.close();
        }
      }
    }
    return { bench: 'pacer', requests, targetSeconds, minSpacingMs, marginMs, configs: results, postgres };
  } finally {
    await sql.end({ timeout: 5 });
    await target.drop();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await run(process.argv.slice(2));
  console.log(JSON.stringify(result));
}

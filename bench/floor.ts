import { mkdir, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { localRunOptionsSchema } from '#local/run/options.ts';
import { runLocal } from '#local/run/runner.ts';
import { FAMILY, FAMILY_NAMES, type FamilyName } from '#local/simulator/family.ts';
import type { SimulatorOptionsInput } from '#local/simulator/index.ts';
import { RESET_BASES } from '#local/simulator/rate-limiter.ts';
import {
  openTarget,
  positiveInt,
  postgresVersion,
  quietIo,
  readPageLogs,
  readPlanRequestStart,
  round1,
  round3,
  tempDataDir,
  windowConfigs,
  windowLabel,
} from './lib.ts';
import { floorPlotSvg } from './plot.ts';

/**
 * How close the pipeline paces to the rate limit: 600 pages through the synthesized state
 * machine, the handler and PostgreSQL against the simulator limited to 10 requests per window,
 * for windows of 20, 30 and 60 s, fixed and sliding, without and with 3.5 s upstream latency.
 *
 * The floor of a configuration: the 600th request cannot start before (ceil(600/10) - 1) x W =
 * 59 W after the first one, and takes at least the upstream latency L itself, so
 *   floor = 59 W + L            (L = 0 without latency; our own compute is not in it)
 * and elapsed is measured the same way: from the first request's start to the moment the last
 * page is stored (from the step's own log lines). ratio = elapsed / floor.
 *
 * Two more lower bounds hold by design, and each configuration also reports elapsed over the
 * largest of the three (`boundBy`, `ratioToBound`): our minimum spacing, (600 - 1) x spacing + L,
 * which binds at W = 20 s (2.2 s > 20 s / 10); and sequential requests, 600 x L, which binds
 * when the latency exceeds W / 10.
 *
 * Every configuration is time-scaled (the runner divides the simulator's window, latency and
 * TTLs, the Wait states and the minimum spacing by the scale) so that the scaled per-request floor
 * W / 10 / scale is the same everywhere (--request-floor-ms, default 100 ms), and pages hold
 * --page-size events (default 500, not 5000): the page count stays 600, but a 500-event page
 * costs ~30 ms of compute instead of ~250 ms, well under the 100 ms per-request floor, so the
 * figure measures pacing and not the CPU. 12 configurations x ~60-130 s fit in 20 minutes.
 * KEEP=1 keeps the runs' data directory (the step's per-page log lines) for inspection.
 */
export async function run(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      pages: { type: 'string', default: '600' },
      'page-size': { type: 'string', default: '500' },
      'request-floor-ms': { type: 'string', default: '100' },
      'min-spacing-ms': { type: 'string', default: '2200' },
      only: { type: 'string' },
      chains: { type: 'string', default: 'auto' },
      // Members of the upstream family (local/simulator/family.ts), comma-separated.
      family: { type: 'string', default: 'default' },
      // Every Reset basis, fixed and sliding (the rest as the default member): 6 x the configurations.
      bases: { type: 'boolean', default: false },
      // Writes an SVG of each configuration's request starts per chain (--plot DIR, default docs/img).
      plot: { type: 'string' },
      // Share of requests the simulator answers 503 (the load balancer's).
      errors: { type: 'string', default: '0' },
    },
    allowPositionals: false,
  });
  const pages = positiveInt(values.pages, '--pages');
  const pageSize = positiveInt(values['page-size'], '--page-size');
  const requestFloorMs = positiveInt(values['request-floor-ms'], '--request-floor-ms');
  const minSpacingMs = Number(values['min-spacing-ms']);
  if (!Number.isInteger(minSpacingMs) || minSpacingMs < 0)
    throw new Error(`--min-spacing-ms must be a whole number >= 0, got "${values['min-spacing-ms']}"`);
  const chains = values.chains === 'auto' ? 'auto' : positiveInt(values.chains, '--chains');
  const limit = 10;
  // --only 20:fixed:0,60:sliding:3500 picks configurations (for trying a change quickly).
  const families = values.bases
    ? (['fixed', 'sliding'] as const).flatMap((windowMode) =>
        RESET_BASES.map((resetBasis) => ({
          label: `${windowMode}/${resetBasis}`,
          sim: { windowMode, resetBasis } as Partial<SimulatorOptionsInput>,
        })),
      )
    : (values.family ?? 'default').split(',').map((name) => {
        const member = name.trim() as FamilyName;
        if (!FAMILY_NAMES.includes(member))
          throw new Error(`--family ${name} is not a member: use one of ${FAMILY_NAMES.join(', ')}`);
        return { label: member, sim: { family: member } as Partial<SimulatorOptionsInput> };
      });
  const errorRate = Number(values.errors);
  if (!(errorRate >= 0 && errorRate < 1))
    throw new Error(`--errors must be a share from 0 to below 1, got "${values.errors}"`);
  const plotDir = values.plot === undefined ? null : values.plot === '' ? 'docs/img' : values.plot;
  const configs = families.flatMap((f) =>
    windowConfigs(values.only)
      // A member names its window mode; --bases sets it: the others keep the configuration's.
      .filter(
        (c) =>
          values.bases ||
          !('windowMode' in (FAMILY[f.label as FamilyName]?.options ?? {})) ||
          (FAMILY[f.label as FamilyName].options as { windowMode?: string }).windowMode === c.windowMode,
      )
      .map((c) => ({ ...c, ...(f.sim.windowMode ? { windowMode: f.sim.windowMode } : {}), family: f })),
  );

  const target = await openTarget('dsi_bench_floor');
  const data = await tempDataDir('floor');
  console.log(
    `floor: ${configs.length} configurations x ${pages} pages of ${pageSize} events, ${limit} requests per window, ` +
      `scaled per-request floor ${requestFloorMs} ms, min spacing ${minSpacingMs} ms before scaling, into ${target.label}`,
  );
  console.log(
    `floor: floor = (ceil(${pages}/${limit}) - 1) x W + L (the last request cannot start earlier and takes its latency L), scaled; ` +
      'elapsed = first request start to last page stored',
  );
  try {
    const postgres = await postgresVersion(target.url);
    const results: Record<string, unknown>[] = [];
    for (const [i, c] of configs.entries()) {
      const timeScale = (c.windowSeconds * 1000) / limit / requestFloorMs;
      const sourceId = `floor-${i}`;
      const options = localRunOptionsSchema.parse({
        databaseUrl: target.url,
        apiUrl: null,
        apiKey: null,
        events: pages * pageSize,
        windowSeconds: c.windowSeconds,
        rateLimit: limit,
        windowMode: c.windowMode,
        timeScale,
        // The simulator's latency is that of a 5000-event page, smaller pages in proportion: scale
        // it up so that one of these smaller pages still takes L, as a live 5000-event page does.
        latencyMs: (c.latencyMs * 5000) / pageSize,
        chaos: false,
        // Event ids are the primary key across sources: each configuration needs its own data set.
        seed: i + 1,
        sourceId,
        reset: true,
        json: false,
        maxIterations: 1000,
        chains,
        minSpacingMs,
        dataDir: data.dir,
        progress: 'none',
      });
      const summary = await runLocal(options, {
        ...quietIo(() => false, pageSize),
        simulator: { ...c.family.sim, ...(errorRate > 0 ? { transientErrorRate: errorRate } : {}) },
      });
      if (summary.status !== 'complete' || !summary.verified) {
        throw new Error(
          `floor: ${windowLabel(c)} ended ${summary.status} (verified ${summary.verified}, ${summary.events} events, ` +
            `${summary.error ? `${summary.error.name}: ${summary.error.message}` : 'no error'}); see ${data.dir}/logs/${sourceId}.log`,
        );
      }
      const logFile = resolve(data.dir, 'logs', `${sourceId}.log`);
      const logs = await readPageLogs(logFile);
      const stored = logs.reduce((n, l) => n + l.page.inserted, 0);
      if (logs.length < pages || stored !== pages * pageSize)
        throw new Error(
          `floor: expected at least ${pages} page log lines storing ${pages * pageSize} events for ${windowLabel(c)}, found ${logs.length} storing ${stored}`,
        );
      // From the first request's start (the Plan task's, when it made one) to the last page stored.
      const planStart = await readPlanRequestStart(logFile);
      const firstStart = Math.min(
        ...logs.map((l) => l.atMs - l.persistMs - l.upstreamLatencyMs),
        ...(planStart === null ? [] : [planStart]),
      );
      const lastAt = Math.max(...logs.map((l) => l.atMs));
      const elapsedSeconds = (lastAt - firstStart) / 1000;
      const floorSeconds =
        ((Math.ceil(pages / limit) - 1) * c.windowSeconds + c.latencyMs / 1000) / timeScale;
      // Requests go one after the other: none can start before the previous one has returned.
      const sequentialSeconds = (pages * c.latencyMs) / 1000 / timeScale;
      // Our own minimum spacing between request starts, the other lower bound the pipeline obeys
      // by design: at W = 20 s, 2.2 s x 9 gaps already exceeds 2.0 s per request on average.
      const spacingSeconds = ((pages - 1) * minSpacingMs + c.latencyMs) / 1000 / timeScale;
      // One chain cannot overlap its requests; several can, so the sequential bound is one chain's only.
      const bounds = {
        'rate limit': floorSeconds,
        'min spacing': spacingSeconds,
        ...(summary.chains === 1 ? { latency: sequentialSeconds } : {}),
      };
      // The issue's yardstick, whatever the chain count: the rate limit or our own spacing.
      const designBound = Math.max(floorSeconds, spacingSeconds);
      const [boundBy, boundSeconds] = Object.entries(bounds).reduce((a, b) => (b[1] > a[1] ? b : a));
      const pageStarts = logs
        .map((l) => ({ chain: l.chain ?? 0, at: l.atMs - l.persistMs - l.upstreamLatencyMs }))
        .sort((a, b) => a.at - b.at);
      const gaps = pageStarts.slice(1).map((p, k) => p.at - pageStarts[k]!.at);
      const smallestPageGapMs = gaps.length > 0 ? Math.min(...gaps) * timeScale : null;
      if (plotDir) {
        await mkdir(plotDir, { recursive: true });
        const file = resolve(
          plotDir,
          `floor-${c.family.label.replace('/', '-')}-${windowLabel(c).replaceAll(':', '-')}.svg`,
        );
        await writeFile(
          file,
          floorPlotSvg({
            title: `${c.family.label} ${windowLabel(c)}: ${pages} pages, ${summary.chains} chain(s), ${round3(elapsedSeconds / designBound)} x max(rate limit, spacing)`,
            starts: pageStarts.map((p) => ({
              chain: p.chain,
              atSeconds: ((p.at - firstStart) / 1000) * timeScale,
            })),
            windowSeconds: c.windowSeconds,
            limit,
            boundSeconds: designBound * timeScale,
          }),
        );
        console.log(`  plot: ${file}`);
      }
      const entry = {
        family: c.family.label,
        errorRate,
        pages,
        smallestPageGapMs: smallestPageGapMs === null ? null : Math.round(smallestPageGapMs),
        config: windowLabel(c),
        windowSeconds: c.windowSeconds,
        windowMode: c.windowMode,
        latencyMs: c.latencyMs,
        timeScale: round3(timeScale),
        elapsedSeconds: round1(elapsedSeconds),
        floorSeconds: round1(floorSeconds),
        ratio: round3(elapsedSeconds / floorSeconds),
        rateLimited: summary.rateLimited,
        requests: summary.requests,
        sequentialLatencySeconds: round1(sequentialSeconds),
        minSpacingSeconds: round1(spacingSeconds),
        boundBy,
        ratioToBound: round3(elapsedSeconds / boundSeconds),
        chains: summary.chains,
        chainMode: summary.chainMode,
        pageLines: logs.length,
        ratioToDesignBound: round3(elapsedSeconds / designBound),
      };
      results.push(entry);
      console.log(
        `  ${c.family.label.padEnd(22)} ${windowLabel(c).padEnd(16)} scale ${entry.timeScale}: ${entry.elapsedSeconds} s vs floor ${entry.floorSeconds} s = ` +
          `${entry.ratio.toFixed(3)} x, ${summary.rateLimited} x 429 in ${summary.requests} requests, ${summary.chains} chain(s); ` +
          `max(rate limit, spacing) ${round1(designBound)} s: ${entry.ratioToDesignBound.toFixed(3)} x; ` +
          `tightest lower bound: ${boundBy} (${round1(boundSeconds)} s), ${entry.ratioToBound.toFixed(3)} x of it; ` +
          `${summary.requests} requests for ${pages} pages, smallest gap between page starts ${entry.smallestPageGapMs} ms unscaled`,
      );
    }
    return {
      bench: 'floor',
      pages,
      pageSize,
      requestFloorMs,
      minSpacingMs,
      chains,
      configs: results,
      postgres,
    };
  } finally {
    await target.drop();
    if (!process.env.KEEP) await data.remove();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await run(process.argv.slice(2));
  console.log(JSON.stringify(result));
}

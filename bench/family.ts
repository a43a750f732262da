import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { FAMILY, FAMILY_NAMES, type FamilyName } from '#local/simulator/family.ts';
import { configDefaults } from '#shared/config.ts';
import { type FamilyCase, runFamilyCase, smallestGapMs } from './pacer-family.ts';
import type { BenchResult } from './result.ts';

/*
 * The pacer against every named member of the upstream family (local/simulator/family.ts), in
 * VIRTUAL time: the step's real request layer (shared/step/recovery.ts) and the shared pacer's
 * real decisions (shared/pacing/shared-pacer.ts), N chains, the simulator's own RateLimiter,
 * the state machine's whole-second waits; no database, no HTTP, no event loop. Each decision
 * is exact and the run deterministic for a seed, so a ratio here is the pacer's own, without
 * the time-scaled floor bench's real-time overheads (a 10 ms timer is 0.2-0.6 s there).
 *
 * Per member x window (20, 30, 60 s) x latency (none; 3.5-4 s with the member's slow tail) x
 * mode (the member's, or both for `default`): elapsed from the first request's start to the
 * last page's answer / max(rate-limit floor, spacing bound), where
 *   rate-limit floor = (ceil(requests / 10) - 1) x W + L,  spacing bound = (requests - 1) x S + L,
 * L the mean latency (3.75 s live) and S the minimum spacing; plus 429s, the smallest gap
 * between two starts and what the pacer learned (the window against its true length, the
 * rounding, the window's kind).
 *
 * The default member's whole-second Reset is rounded up (what a client at time scale 1 reads;
 * its exact `-Exact` header exists only in scaled runs).
 */

const WINDOWS = [20_000, 30_000, 60_000] as const;
const MEAN_LIVE_LATENCY_MS = 3750;

function caseOf(
  name: FamilyName,
  windowMs: number,
  mode: 'fixed' | 'sliding',
  live: boolean,
  o: { requests: number; chains: number; seed: number; errorRate: number },
): FamilyCase {
  const m = FAMILY[name].options as (typeof FAMILY)[FamilyName]['options'] & Record<string, unknown>;
  const rounding = (m.resetRounding as FamilyCase['rounding'] | undefined) ?? 'exact';
  return {
    chains: o.chains,
    requests: o.requests,
    limit: 10,
    windowMs,
    mode,
    resetBasis: (m.resetBasis as FamilyCase['resetBasis'] | undefined) ?? 'window-start',
    // 'exact' is the scaled runs' fractional header; at scale 1 its whole-second header rounds up.
    rounding: rounding === 'exact' ? 'up' : rounding,
    align: (m.windowAlign as FamilyCase['align'] | undefined) ?? 'first-request',
    countRejected: (m.countRejected as boolean | undefined) ?? false,
    uncountedErrors: (m.uncountedErrors as boolean | undefined) ?? false,
    headerAt: 'arrival',
    live,
    tailRate: live ? ((m.latencyTailRate as number | undefined) ?? 0) : 0,
    errorRate: o.errorRate,
    timeoutRate: 0,
    cursorRefusalRate: 0,
    lateRate: 0,
    lateMaxMs: 0,
    seed: o.seed,
    minSpacingMs: configDefaults.minSpacingMs,
  };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

export async function run(args: string[]): Promise<BenchResult> {
  const { values } = parseArgs({
    args,
    options: {
      requests: { type: 'string', default: '600' },
      chains: { type: 'string', default: '3' },
      seed: { type: 'string', default: '1' },
      members: { type: 'string' },
      errors: { type: 'string', default: '0' },
    },
  });
  const int = (v: string | undefined, name: string) => {
    if (!/^\d+$/.test(v ?? '') || Number(v) < 1)
      throw new Error(`${name} must be a whole number from 1, got "${v}"`);
    return Number(v);
  };
  const requests = int(values.requests, '--requests');
  const chains = int(values.chains, '--chains');
  const seed = int(values.seed, '--seed');
  const errorRate = Number(values.errors);
  if (!(errorRate >= 0 && errorRate < 1))
    throw new Error(`--errors must be a share from 0 to below 1, got "${values.errors}"`);
  const members = (values.members?.split(',') ?? FAMILY_NAMES).map((n) => {
    if (!(n in FAMILY))
      throw new Error(`--members: unknown member "${n}"; the family is ${FAMILY_NAMES.join(', ')}`);
    return n as FamilyName;
  });

  console.log(
    `family: ${members.length} members x 3 windows x 2 latencies, ${requests} requests, ${chains} chains, virtual time; ` +
      'ratio = first start to last answer / max(rate-limit floor, spacing bound)',
  );
  const configs: Record<string, unknown>[] = [];
  for (const name of members) {
    const fixedMode = (FAMILY[name].options as { windowMode?: 'fixed' | 'sliding' }).windowMode;
    for (const mode of fixedMode ? [fixedMode] : (['fixed', 'sliding'] as const))
      for (const windowMs of WINDOWS)
        for (const live of [false, true]) {
          const c = caseOf(name, windowMs, mode, live, { requests, chains, seed, errorRate });
          const r = await runFamilyCase(c);
          const lat = live ? MEAN_LIVE_LATENCY_MS : 0;
          const n = r.requests.length;
          const floorMs = (Math.ceil(n / c.limit) - 1) * windowMs + lat;
          const spacingMs = (n - 1) * c.minSpacingMs! + lat;
          const ratio = r.elapsedMs / Math.max(floorMs, spacingMs);
          const entry = {
            member: name,
            config: `${windowMs / 1000}:${mode}:${live ? 'live' : 0}`,
            ratio: round3(ratio),
            boundBy: floorMs >= spacingMs ? 'rate limit' : 'spacing',
            rateLimited: r.rateLimited,
            requests: n,
            pages: r.pages,
            smallestGapMs: Math.round(smallestGapMs(r.requests)),
            windowLearnedMs: r.windowEstimateMs === null ? null : Math.round(r.windowEstimateMs),
            windowMs,
            rounding: r.pacer.rounding ?? (r.pacer.exactResets ? 'exact' : null),
            windowKind: r.pacer.windowKind ?? null,
            stalled: r.stalled,
          };
          configs.push(entry);
          console.log(
            `  ${name.padEnd(16)} ${entry.config.padEnd(16)} ${entry.ratio.toFixed(3)} x (${entry.boundBy}), ` +
              `${entry.rateLimited} x 429, ${n} requests for ${r.pages} pages, smallest gap ${entry.smallestGapMs} ms, ` +
              `window learned ${entry.windowLearnedMs ?? '-'} ms of ${windowMs}, rounding ${entry.rounding ?? '?'}, ` +
              `kind ${entry.windowKind ?? '?'}${r.stalled ? ', STALLED' : ''}`,
          );
        }
  }
  const worst = configs.reduce((w, c) => Math.max(w, c.ratio as number), 0);
  const rateLimited = configs.reduce((s, c) => s + (c.rateLimited as number), 0);
  const over = configs.filter((c) => (c.ratio as number) > 1.03).map((c) => `${c.member} ${c.config}`);
  console.log(
    `family: worst ${worst.toFixed(3)} x, ${rateLimited} x 429 in all; ${over.length} of ${configs.length} above 1.03` +
      (over.length ? `: ${over.join(', ')}` : ''),
  );
  return {
    bench: 'family',
    requests,
    chains,
    seed,
    errorRate,
    worst: round3(worst),
    rateLimited,
    above103: over.length,
    configs,
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await run(process.argv.slice(2));
  console.log(JSON.stringify(result));
}

import { randomBytes, randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { acquireLease } from '#shared/db/checkpoints.ts';
import { createSql } from '#shared/db/client.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { persistPage } from '#shared/db/persist.ts';
import type { NormalisedEvent } from '#shared/upstream/types.ts';
import { openTarget } from './lib.ts';

/**
 * 600 pages x 5000 events through the production persistPage (one transaction per page: bulk
 * insert ON CONFLICT, checkpoint advance with version and lease check), into DATABASE_URL or,
 * when unset, a throw-away database on the test server that is dropped afterwards.
 * Only persistPage is timed; generating the events in-process is not.
 */
export async function run(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      pages: { type: 'string', default: '600' },
      'page-size': { type: 'string', default: '5000' },
    },
    allowPositionals: false,
  });
  const pages = positiveInt(values.pages, '--pages');
  const pageSize = positiveInt(values['page-size'], '--page-size');
  const target = await openTarget('dsi_bench');
  const sql = createSql(target.url, { applicationName: 'datasync-bench-persist', statementTimeoutMs: 0 });
  try {
    await runMigrations(sql);
    const [{ version: serverVersion } = { version: '?' }] = await sql<{ version: string }[]>`
      select split_part(current_setting('server_version'), ' ', 1) as version`;
    const sourceId = `bench-${randomBytes(4).toString('hex')}`;
    const owner = 'bench';
    let cp = await acquireLease(sql, { sourceId, owner, nowMs: Date.now(), ttlMs: 3_600_000 });
    const gen = new EventGenerator(Date.UTC(2025, 11, 1));
    console.log(
      `persist: ${pages} pages x ${pageSize} events into ${target.label} (PostgreSQL ${serverVersion}), source ${sourceId}`,
    );

    const durations: number[] = [];
    let bytes = 0;
    let inserted = 0;
    const wallStart = performance.now();
    for (let p = 0; p < pages; p++) {
      const events = gen.page(pageSize);
      if (p === 0) bytes = Buffer.byteLength(JSON.stringify(events)) / pageSize;
      const last = events.at(-1) as NormalisedEvent;
      const t0 = performance.now();
      const r = await persistPage(sql, {
        sourceId,
        expectedVersion: cp.version,
        owner,
        events,
        rejects: [],
        pageCursor: null,
        next: {
          cursor: `bench-${p + 1}`,
          positionTs: last.occurredAtMs,
          positionId: last.id,
          hasMore: p < pages - 1,
          nextRequestAtMs: Date.now(),
          rateLimit: null,
          totalReported: pages * pageSize,
        },
        requestsMade: 1,
        rateLimitedSeen: 0,
      });
      durations.push(performance.now() - t0);
      inserted += r.inserted;
      cp = r.checkpoint;
      if ((p + 1) % 50 === 0 || p === pages - 1) {
        const recent = durations.slice(-50);
        const rate = (recent.length * pageSize) / (sum(recent) / 1000);
        console.log(
          `  page ${p + 1}/${pages}: ${inserted.toLocaleString('en-US')} rows, last 50 pages ${Math.round(rate).toLocaleString('en-US')} events/s, p50 ${percentile(recent, 50).toFixed(0)} ms`,
        );
      }
    }
    const wallSeconds = (performance.now() - wallStart) / 1000;
    const persistSeconds = sum(durations) / 1000;
    const [{ rows } = { rows: 0 }] = await sql<{ rows: number }[]>`
      select count(*)::int as rows from events where source_id = ${sourceId}`;
    if (rows !== pages * pageSize || inserted !== rows || cp.eventsInserted !== rows) {
      throw new Error(
        `persist bench: counts disagree (table ${rows}, returned ${inserted}, checkpoint ${cp.eventsInserted}, expected ${pages * pageSize})`,
      );
    }
    const result = {
      bench: 'persist',
      events: rows,
      pages,
      pageSize,
      bytesPerEvent: Math.round(bytes),
      eventsPerSecond: Math.round(rows / persistSeconds),
      msPerPageP50: round1(percentile(durations, 50)),
      msPerPageP95: round1(percentile(durations, 95)),
      wallSeconds: round1(wallSeconds),
      postgres: serverVersion,
    };
    console.log(
      `persist: ${rows.toLocaleString('en-US')} events in ${persistSeconds.toFixed(1)} s of persistPage ` +
        `(${result.eventsPerSecond.toLocaleString('en-US')} events/s; p50 ${result.msPerPageP50} ms, p95 ${result.msPerPageP95} ms per page; ` +
        `${wallSeconds.toFixed(1)} s wall with generation)`,
    );
    if (!target.throwAway) {
      await sql`delete from events where source_id = ${sourceId}`;
      await sql`delete from checkpoints where source_id = ${sourceId}`;
    }
    return result;
  } finally {
    await sql.end({ timeout: 5 });
    await target.drop();
  }
}

/** Realistic rows: random UUIDs, one of eight types, small nested properties, ~350 bytes of JSON each. */
class EventGenerator {
  private ts: number;
  private sessions: { id: string; user: string; device: string; browser: string }[] = [];
  constructor(startMs: number) {
    this.ts = startMs;
  }
  page(size: number): NormalisedEvent[] {
    const out: NormalisedEvent[] = new Array(size);
    for (let i = 0; i < size; i++) {
      if (this.sessions.length === 0 || Math.random() < 0.05) this.newSession();
      const s = this.sessions[
        Math.floor(Math.random() * this.sessions.length)
      ] as EventGenerator['sessions'][0];
      this.ts += 1 + Math.floor(Math.random() * 200);
      const type = TYPES[Math.floor(Math.random() * TYPES.length)] as string;
      out[i] = {
        id: randomUUID(),
        sessionId: s.id,
        userId: s.user,
        type,
        name: `event_${Math.random().toString(36).slice(2, 8)}`,
        properties: {
          page: PAGES[Math.floor(Math.random() * PAGES.length)],
          referrer: 'https://www.example.com/search?q=analytics',
          durationMs: Math.floor(Math.random() * 30_000),
          ...(type === 'purchase'
            ? { amount: Math.round(Math.random() * 50_000) / 100, currency: 'EUR' }
            : {}),
        },
        occurredAtMs: this.ts,
        deviceType: s.device,
        browser: s.browser,
      };
    }
    return out;
  }
  private newSession(): void {
    if (this.sessions.length > 200) this.sessions.shift();
    this.sessions.push({
      id: randomUUID(),
      user: randomUUID(),
      device: ['desktop', 'mobile', 'tablet'][Math.floor(Math.random() * 3)] as string,
      browser: ['Chrome', 'Safari', 'Firefox', 'Edge'][Math.floor(Math.random() * 4)] as string,
    });
  }
}

const TYPES = ['page_view', 'click', 'api_call', 'form_submit', 'scroll', 'purchase', 'error', 'video_play'];
const PAGES = [
  '/home',
  '/pricing',
  '/docs/getting-started',
  '/checkout',
  '/account/settings',
  '/blog/launch',
];

function positiveInt(value: string | undefined, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`${flag} must be a positive whole number, got "${value}"`);
  return n;
}

function sum(xs: number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s;
}

function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? 0;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await run(process.argv.slice(2));
  console.log(JSON.stringify(result));
}

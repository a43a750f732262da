import { randomBytes, randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Sql } from 'postgres';
import { acquireLease } from '#shared/db/checkpoints.ts';
import { createDb, createSql } from '#shared/db/client.ts';
import { EVENT_COPY_COLUMNS, encodeEventsBinary } from '#shared/db/copy-binary.ts';
import { runMigrations } from '#shared/db/migrate.ts';
import { persistPage } from '#shared/db/persist.ts';
import type { NormalisedEvent } from '#shared/upstream/types.ts';
import { openTarget, percentile, positiveInt, round1, round3, sum } from './lib.ts';
import type { BenchResult } from './result.ts';

/**
 * 600 pages x 5000 events through the production persistPage (one transaction per page: the
 * lease and version check, binary COPY of the events, the checkpoint advance), into
 * DATABASE_URL or, when unset, a throw-away database on the test server that is dropped
 * afterwards. Only persistPage is timed; generating the events in-process is not.
 *
 * An absolute events/s does not travel between machines (the same commit measured 84,840 and
 * 45,258 on two machines of the same kind), so the same run also measures the limit for these
 * rows on the same server: a bare binary `COPY ... FROM STDIN` of the same pages, encoded
 * beforehand (untimed), one transaction each, into an empty table built `like events`.
 * `ratioToCopyLimit` is persistPage's events/s over the bare COPY's: what the production path
 * keeps of what the server can take. The two are interleaved page by page, in alternating
 * order, so that noise from other processes and the growth of the tables (the random-UUID
 * primary key outgrowing shared_buffers) weigh on both alike.
 */
export async function run(args: string[]): Promise<BenchResult> {
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
  const suffix = randomBytes(4).toString('hex');
  const limitTable = `bench_copy_limit_${suffix}`;
  try {
    await runMigrations(sql);
    const [{ version: serverVersion } = { version: '?' }] = await sql<{ version: string }[]>`
      select split_part(current_setting('server_version'), ' ', 1) as version`;
    // Same columns, defaults, primary key and checks as events: the limit pays the same index.
    await sql.unsafe(`create table ${limitTable} (like events including all)`);
    const copyLimit = `copy ${limitTable} (${EVENT_COPY_COLUMNS}) from stdin (format binary)`;
    const sourceId = `bench-${suffix}`;
    const owner = 'bench';
    let cp = await acquireLease(createDb(sql), { sourceId, owner, nowMs: Date.now(), ttlMs: 3_600_000 });
    const gen = new EventGenerator(Date.UTC(2025, 11, 1));
    console.log(
      `persist: ${pages} pages x ${pageSize} events into ${target.label} (PostgreSQL ${serverVersion}), source ${sourceId}; ` +
        `limit: bare binary COPY of the same pages into ${limitTable}`,
    );

    const durations: number[] = [];
    const copyDurations: number[] = [];
    let bytes = 0;
    let inserted = 0;
    const wallStart = performance.now();
    for (let p = 0; p < pages; p++) {
      const events = gen.page(pageSize);
      if (p === 0) bytes = Buffer.byteLength(JSON.stringify(events)) / pageSize;
      const payload = encodeEventsBinary(events, sourceId);
      const last = events.at(-1) as NormalisedEvent;
      const persist = async (): Promise<void> => {
        const t0 = performance.now();
        const r = await persistPage(createDb(sql), {
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
      };
      const limit = async (): Promise<void> => {
        const t0 = performance.now();
        await bareCopy(sql, copyLimit, payload);
        copyDurations.push(performance.now() - t0);
      };
      if (p % 2 === 0) {
        await persist();
        await limit();
      } else {
        await limit();
        await persist();
      }
      if ((p + 1) % 50 === 0 || p === pages - 1) {
        const recent = durations.slice(-50);
        const recentCopy = copyDurations.slice(-50);
        const rate = (recent.length * pageSize) / (sum(recent) / 1000);
        console.log(
          `  page ${p + 1}/${pages}: ${inserted.toLocaleString('en-US')} rows, last 50 pages ${Math.round(rate).toLocaleString('en-US')} events/s, ` +
            `p50 ${percentile(recent, 50).toFixed(0)} ms (bare COPY p50 ${percentile(recentCopy, 50).toFixed(0)} ms, ratio ${(sum(recentCopy) / sum(recent)).toFixed(3)})`,
        );
      }
    }
    const wallSeconds = (performance.now() - wallStart) / 1000;
    const persistSeconds = sum(durations) / 1000;
    const copySeconds = sum(copyDurations) / 1000;
    const [{ rows, limitRows } = { rows: 0, limitRows: 0 }] = await sql.unsafe<
      { rows: number; limitRows: number }[]
    >(
      `select (select count(*)::int from events where source_id = $1) as rows,
              (select count(*)::int from ${limitTable}) as "limitRows"`,
      [sourceId],
    );
    const expected = pages * pageSize;
    if (rows !== expected || inserted !== rows || cp.eventsInserted !== rows || limitRows !== expected) {
      throw new Error(
        `persist bench: counts disagree (table ${rows}, returned ${inserted}, checkpoint ${cp.eventsInserted}, ` +
          `bare COPY table ${limitRows}, expected ${expected})`,
      );
    }
    const eventsPerSecond = rows / persistSeconds;
    const copyLimitEventsPerSecond = rows / copySeconds;
    const result = {
      bench: 'persist',
      events: rows,
      pages,
      pageSize,
      bytesPerEvent: Math.round(bytes),
      eventsPerSecond: Math.round(eventsPerSecond),
      ratioToCopyLimit: round3(eventsPerSecond / copyLimitEventsPerSecond),
      copyLimitEventsPerSecond: Math.round(copyLimitEventsPerSecond),
      msPerPageP50: round1(percentile(durations, 50)),
      msPerPageP95: round1(percentile(durations, 95)),
      copyLimitMsPerPageP50: round1(percentile(copyDurations, 50)),
      wallSeconds: round1(wallSeconds),
      postgres: serverVersion,
    };
    console.log(
      `persist: ${rows.toLocaleString('en-US')} events in ${persistSeconds.toFixed(1)} s of persistPage ` +
        `(${result.eventsPerSecond.toLocaleString('en-US')} events/s, ratioToCopyLimit ${result.ratioToCopyLimit}; ` +
        `p50 ${result.msPerPageP50} ms, p95 ${result.msPerPageP95} ms per page); ` +
        `bare COPY ${copySeconds.toFixed(1)} s (${result.copyLimitEventsPerSecond.toLocaleString('en-US')} events/s, ` +
        `p50 ${result.copyLimitMsPerPageP50} ms); ${wallSeconds.toFixed(1)} s wall with generation`,
    );
    if (!target.throwAway) {
      await sql`delete from events where source_id = ${sourceId}`;
      await sql`delete from checkpoints where source_id = ${sourceId}`;
    }
    return result;
  } finally {
    await sql.unsafe(`drop table if exists ${limitTable}`).catch(() => {});
    await sql.end({ timeout: 5 });
    await target.drop();
  }
}

/**
 * The limit: begin, COPY the payload, commit; nothing else on the wire. Over the simple-query
 * protocol like the production COPY. Unlike copyIn it has no probe query behind the data (the
 * probe only guards against a COPY error that postgres.js loses, and a fresh table of random
 * UUIDs refuses nothing), so it is the floor the production path is compared with.
 */
async function bareCopy(sql: Sql, statement: string, payload: Buffer): Promise<void> {
  await sql.begin(async (tx) => {
    // `simple` is a runtime option of postgres.js that its type definitions do not list.
    const stream = await tx.unsafe(statement, [], { simple: true } as never).writable();
    await new Promise<void>((resolve, reject) => {
      stream.once('finish', resolve);
      stream.once('error', reject);
      stream.end(payload);
    });
  });
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

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = await run(process.argv.slice(2));
  console.log(JSON.stringify(result));
}

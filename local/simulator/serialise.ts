import { DEEP_PROPERTIES_DEPTH, type EventFault, type EventFaults, UNKNOWN_TYPE } from './event-faults.ts';
import type { EventFields } from './event-fields.ts';
import type { Sessions } from './sessions.ts';
import type { Timeline } from './timeline.ts';

/*
 * Events as the server sends them: JSON text assembled by hand (several times faster than
 * JSON.stringify of an object per event), with the per-event faults applied.
 */

export type FaultCounts = Partial<Record<EventFault['kind'], number>>;

export interface Serialiser {
  /** The event at `index`, whose key and instant the caller already knows. */
  serialise(index: number, key: number, ms: number): string;
  /** Events [start, end) comma-joined, with the per-kind fault counts. The caller checks the bounds. */
  serialiseRange(start: number, end: number): { json: string; faults: FaultCounts };
}

export interface SerialiserParts {
  total: number;
  timeline: Timeline;
  fields: EventFields;
  sessions: Sessions;
  faults: EventFaults;
}

export function createSerialiser({ total, timeline, fields, sessions, faults }: SerialiserParts): Serialiser {
  const { idOfKey, typeOfKey, nameOfKey } = fields;
  const { sessionInfo, sessionOfKey } = sessions;
  const { faultFor } = faults;
  const iso = createIsoFormatter();

  function serialise(index: number, key: number, ms: number): string {
    const s = sessionInfo(sessionOfKey(key));
    const id = idOfKey(key);
    const f = faultFor(index);
    let ts: string;
    if (
      f === null ||
      f.kind === 'missingField' ||
      f.kind === 'deepProperties' ||
      f.kind === 'unexactNumber' ||
      f.kind === 'unknownType'
    ) {
      ts = index % 3 === 0 ? String(ms) : `"${iso(ms)}"`;
    } else if (f.kind === 'malformedTimestamp') ts = JSON.stringify(f.value);
    else if (f.kind === 'epochSeconds') ts = String(ms / 1000);
    else ts = JSON.stringify(`${f.prefix}${iso(ms)}${f.suffix}`);
    if (f === null) {
      return `{"id":"${id}","sessionId":"${s.id}","userId":"${s.userId}","type":"${typeOfKey(key)}","name":"${nameOfKey(key)}","properties":{"page":"/home"},"timestamp":${ts},"session":{"id":"${s.id}","deviceType":"${s.deviceType}","browser":"${s.browser}"}}`;
    }
    const missing = f.kind === 'missingField' ? f.field : null;
    let out = `{"id":"${id}"`;
    if (missing !== 'sessionId') out += `,"sessionId":"${s.id}"`;
    if (missing !== 'userId') out += `,"userId":"${s.userId}"`;
    if (missing !== 'type') out += `,"type":"${f.kind === 'unknownType' ? UNKNOWN_TYPE : typeOfKey(key)}"`;
    if (missing !== 'name') out += `,"name":"${nameOfKey(key)}"`;
    out += `,"properties":${propertiesOf(f)}`;
    if (missing !== 'timestamp') out += `,"timestamp":${ts}`;
    out += `,"session":{"id":"${s.id}","deviceType":"${s.deviceType}","browser":"${s.browser}"}}`;
    return out;
  }

  function serialiseRange(start: number, end: number) {
    const counts: FaultCounts = {};
    if (start >= end) return { json: '', faults: counts };
    // Timestamps for the range plus one on each side, with tie chains resolved by carrying the
    // previous value forward instead of walking back per index.
    const n = end - start;
    const ts = new Float64Array(n + 2);
    const first = start > 0 ? start - 1 : start;
    let prev = timeline.timestampAt(first);
    for (let i = first; i <= Math.min(end, total - 1); i++) {
      const t = i === first ? prev : timeline.isTie(i) ? prev : timeline.rawTs(i);
      ts[i - start + 1] = t;
      prev = t;
    }
    const parts: string[] = new Array(n);
    let i = start;
    while (i < end) {
      const t = ts[i - start + 1]!;
      const tiedBefore = i > 0 && ts[i - start]! === t;
      const tiedAfter = i < total - 1 && ts[i - start + 2]! === t;
      if (!tiedBefore && !tiedAfter) {
        parts[i - start] = serialise(i, i, t);
        const f = faultFor(i);
        if (f) counts[f.kind] = (counts[f.kind] ?? 0) + 1;
        i++;
        continue;
      }
      const run = timeline.tieRun(i)!;
      for (let x = i; x < Math.min(end, run.start + run.keys.length); x++) {
        parts[x - start] = serialise(x, run.keys[x - run.start]!, t);
        const f = faultFor(x);
        if (f) counts[f.kind] = (counts[f.kind] ?? 0) + 1;
        i = x + 1;
      }
    }
    return { json: parts.join(','), faults: counts };
  }

  return { serialise, serialiseRange };
}

/** The `properties` text of an event served with fault `f`. */
function propertiesOf(f: EventFault): string {
  if (f.kind === 'deepProperties') {
    return `${'{"next":'.repeat(DEEP_PROPERTIES_DEPTH - 1)}{"page":"/home"}${'}'.repeat(DEEP_PROPERTIES_DEPTH - 1)}`;
  }
  if (f.kind === 'unexactNumber') return `{"page":"/home","n":${f.number}}`;
  return '{"page":"/home"}';
}

const DAY_MS = 86_400_000;
const PAD2: readonly string[] = Array.from({ length: 60 }, (_, i) => String(i).padStart(2, '0'));
const PAD3: readonly string[] = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

/**
 * `Date#toISOString` without a Date per event: the day prefix changes about every 77 events at 3M,
 * so it is cached and the time of day is assembled from padded tables.
 */
function createIsoFormatter(): (ms: number) => string {
  let isoDay = Number.NaN;
  let isoPrefix = '';
  return (ms) => {
    const day = ms - (((ms % DAY_MS) + DAY_MS) % DAY_MS);
    if (day !== isoDay) {
      isoDay = day;
      isoPrefix = new Date(day).toISOString().slice(0, 11);
    }
    let rem = ms - day;
    const h = Math.floor(rem / 3_600_000);
    rem -= h * 3_600_000;
    const m = Math.floor(rem / 60_000);
    rem -= m * 60_000;
    const sec = Math.floor(rem / 1000);
    return `${isoPrefix}${PAD2[h]}:${PAD2[m]}:${PAD2[sec]}.${PAD3[rem - sec * 1000]}Z`;
  };
}

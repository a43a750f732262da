import type { TransactionSql } from 'postgres';
import type { NormalisedEvent } from '../upstream/types.ts';
import { copyRefusal, NotEncodableError } from './errors.ts';

/*
 * PostgreSQL's binary COPY format for the events table, and a COPY FROM STDIN that cannot hang.
 *
 * Why binary COPY: with a 5000-event page, `json_to_recordset` spends most of its time in the
 * server parsing JSON and converting text to uuid/timestamptz; binary COPY hands the server the
 * values in their storage form (16-byte uuid, int64 microseconds), so only `properties` is
 * parsed (jsonb's binary form is its JSON text). Measured figures are in docs/benchmarks.md.
 *
 * Format (https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4): an 11-byte
 * signature, int32 flags, int32 header-extension length; per row an int16 field count, then per
 * field an int32 byte length (-1 for NULL) and the bytes; an int16 -1 trailer.
 */

/** The columns the payload carries, in order. `ingested_at` keeps its default. */
export const EVENT_COPY_COLUMNS =
  'id, session_id, user_id, type, name, properties, occurred_at, device_type, browser, source_id';
const FIELDS = 10;

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
/** 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch, in Unix milliseconds. */
const PG_EPOCH_MS = 946_684_800_000;
const TWO_32 = 4_294_967_296;

const HEX = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX[65 + i] = 10 + i;
  HEX[97 + i] = 10 + i;
}

class Writer {
  buf: Buffer;
  pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  int16(v: number): void {
    this.ensure(2);
    this.buf.writeInt16BE(v, this.pos);
    this.pos += 2;
  }
  int32(v: number): void {
    this.ensure(4);
    this.buf.writeInt32BE(v, this.pos);
    this.pos += 4;
  }
  uuid(s: string, field: string): void {
    if (s.length !== 36)
      throw new NotEncodableError(`${field} is not a canonical UUID: ${JSON.stringify(s)}`);
    this.ensure(20);
    const b = this.buf;
    b.writeInt32BE(16, this.pos);
    let p = this.pos + 4;
    for (let i = 0; i < 36; ) {
      if (i === 8 || i === 13 || i === 18 || i === 23) {
        if (s.charCodeAt(i) !== 0x2d)
          throw new NotEncodableError(`${field} is not a canonical UUID: ${JSON.stringify(s)}`);
        i++;
        continue;
      }
      const hi = HEX[s.charCodeAt(i)] ?? -1;
      const lo = HEX[s.charCodeAt(i + 1)] ?? -1;
      if (hi < 0 || lo < 0)
        throw new NotEncodableError(`${field} is not a canonical UUID: ${JSON.stringify(s)}`);
      b[p++] = (hi << 4) | lo;
      i += 2;
    }
    this.pos = p;
  }
  /** UTF-8 text. A JS string's UTF-8 form is at most 3 bytes per UTF-16 unit. */
  text(s: string | null): void {
    if (s === null) {
      this.int32(-1);
      return;
    }
    this.ensure(4 + s.length * 3);
    const n = this.buf.write(s, this.pos + 4, 'utf8');
    this.buf.writeInt32BE(n, this.pos);
    this.pos += 4 + n;
  }
  /** jsonb's binary input is a version byte (1) followed by the JSON text. */
  jsonb(json: string): void {
    this.ensure(5 + json.length * 3);
    const n = this.buf.write(json, this.pos + 5, 'utf8');
    this.buf.writeInt32BE(n + 1, this.pos);
    this.buf[this.pos + 4] = 1;
    this.pos += 5 + n;
  }
  /** timestamptz: int64 microseconds since 2000-01-01 UTC, written as two 32-bit halves (exact below 2^53). */
  timestamptz(ms: number, field: string): void {
    const micros = Math.round((ms - PG_EPOCH_MS) * 1000);
    if (!Number.isSafeInteger(micros))
      throw new NotEncodableError(`${field} is not a representable instant: ${ms}`);
    this.ensure(12);
    const hi = Math.floor(micros / TWO_32);
    this.buf.writeInt32BE(8, this.pos);
    this.buf.writeInt32BE(hi, this.pos + 4);
    this.buf.writeUInt32BE(micros - hi * TWO_32, this.pos + 8);
    this.pos += 12;
  }
}

/**
 * The binary COPY payload for `copy events (EVENT_COPY_COLUMNS) from stdin (format binary)`.
 * Throws NotEncodableError for a value it cannot represent exactly (normalisation rules those
 * out; the caller then uses the SQL insert).
 */
export function encodeEventsBinary(events: readonly NormalisedEvent[], sourceId: string): Buffer {
  const w = new Writer(19 + events.length * 400);
  SIGNATURE.copy(w.buf, 0);
  w.pos = SIGNATURE.length;
  w.int32(0);
  w.int32(0);
  for (const e of events) {
    // null/absent properties are SQL NULL, as json_to_recordset makes a JSON null.
    const properties =
      e.properties === null || e.properties === undefined ? null : JSON.stringify(e.properties);
    if (properties === undefined) throw new NotEncodableError(`properties of event ${e.id} is not JSON`);
    w.int16(FIELDS);
    w.uuid(e.id, 'id');
    w.uuid(e.sessionId, 'sessionId');
    w.uuid(e.userId, 'userId');
    w.text(e.type);
    w.text(e.name);
    if (properties === null) w.int32(-1);
    else w.jsonb(properties);
    w.timestamptz(e.occurredAtMs, 'occurredAt');
    w.text(e.deviceType);
    w.text(e.browser);
    w.text(sourceId);
  }
  w.int16(-1);
  return w.buf.subarray(0, w.pos);
}

/**
 * Runs `statement` (a COPY ... FROM STDIN) with `payload` and resolves once the server has
 * accepted every row. Rejects with CopyRefusedError when the server refused the COPY, with the
 * connection error when the connection failed.
 *
 * postgres.js 3.4.9 loses a COPY error that arrives after the writable's end (porsager/postgres
 * #1173): the stream neither finishes nor errors, and the caller would wait forever. So the COPY
 * goes over the simple-query protocol (after an error the server discards the rest of the copy
 * data and is ready again, instead of waiting for a Sync that never comes) and, once the copy
 * data is sent, a probe query follows it on the same connection. If the COPY succeeded, the
 * writable finishes first; if it failed, the probe fails (the transaction is aborted) and that
 * settles the wait. So it must run inside a transaction (a savepoint to go on after a refusal).
 */
export async function copyIn(tx: TransactionSql, statement: string, payload: Buffer): Promise<void> {
  // `simple` is a runtime option of postgres.js that its type definitions do not list.
  const query = tx.unsafe(statement, [], { simple: true } as never);
  const stream = await query.writable();
  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (error?: unknown): void => {
      if (settled) return;
      settled = true;
      if (error === undefined) resolve();
      else reject(copyRefusal(error));
    };
    stream.once('finish', () => settle());
    stream.once('error', (error) => settle(error));
    const final = (stream as unknown as { _final: (cb: (e?: Error | null) => void) => void })._final;
    (stream as unknown as { _final: (cb: (e?: Error | null) => void) => void })._final = function (cb) {
      final.call(this, cb);
      // Queued behind the COPY, answered after it. When the COPY succeeded, 'finish' has
      // already settled the wait. When it failed, the transaction is aborted and the probe
      // fails, which settles it. (Outside a transaction the probe would succeed and, in
      // postgres.js, even fire the COPY's stale 'finish': hence a transaction is required.)
      tx.unsafe('select 1', [], { simple: true } as never).then(
        () => settle(),
        (error: unknown) => settle(error),
      );
    };
    stream.end(payload);
  });
}

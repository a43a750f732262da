/*
 * Numbers JSON can write but JavaScript cannot read back exactly: JSON.parse turns
 * 12345678901234567890 into 12345678901234567000, 1e400 into Infinity (which JSON.stringify then
 * writes as null) and 1e-400 into 0. Storing such an event would store a value the upstream never
 * sent, without a trace. The choice made here: such an event is a REJECT, with a reason naming
 * the number and what it would have become, and its exact text is kept in rejected_events.raw
 * (read from the body, not re-serialised). Nothing else changes: every other number is stored
 * as JSON.parse reads it, which is exact for it.
 *
 * The exact check needs the body's text, so it runs in the client. A page of the live service
 * never needs it: a number token of 16 or more digits, or with a three-digit exponent, is what
 * sends the page down the slow path (one regex test of the body);
 * epoch milliseconds have 13 digits.
 */

/**
 * A number token (right after `:`, `[` or `,`) with 16 or more digits and dots, or an exponent of
 * 3+ digits. Strings never match (their quote comes first), so neither do UUIDs or ISO instants.
 */
const SUSPICIOUS = /[:[,]\s*-?(?:\d[\d.]{15}|[\d.]+[eE][+-]?\d{3})/;

/** One event of the page's `data` array that carries a number JavaScript cannot hold exactly. */
export interface UnexactEvent {
  /** Its index in `data`. */
  index: number;
  reason: string;
  /** The event's exact JSON text, as the body carried it. */
  rawText: string;
}

/** The events of a 2xx body's `data` array that carry an unexact number; empty for almost every page. */
export function findUnexactNumbers(text: string): UnexactEvent[] {
  if (!SUSPICIOUS.test(text)) return [];
  return scan(text);
}

/**
 * true when the number token `tok` (JSON syntax) is read by JavaScript as exactly the decimal
 * value it writes: the shortest form of the double it becomes denotes the same decimal.
 */
export function isExactNumber(tok: string): boolean {
  const n = Number(tok);
  if (!Number.isFinite(n)) return false;
  const a = decimalKey(tok);
  const b = decimalKey(String(n));
  return a !== null && b !== null && a === b;
}

/** The token's value as `sign digits e exponent`, digits without leading or trailing zeros; zero is '0'. */
function decimalKey(tok: string): string | null {
  const m = /^(-?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(tok.trim());
  if (!m) return null;
  const sign = m[1] ?? '';
  const int = m[2] ?? '';
  const frac = m[3] ?? '';
  let exp = m[4] === undefined ? 0 : Number(m[4]);
  let digits = int + frac;
  exp -= frac.length;
  const lead = digits.search(/[1-9]/);
  if (lead < 0) return '0';
  digits = digits.slice(lead);
  const trail = digits.length - digits.replace(/0+$/, '').length;
  digits = digits.slice(0, digits.length - trail);
  exp += trail;
  return `${sign}${digits}e${exp}`;
}

function describeRead(tok: string): string {
  const n = Number(tok);
  if (Number.isNaN(n)) return 'NaN';
  if (!Number.isFinite(n)) return `${n > 0 ? '' : '-'}Infinity, which JSON writes as null`;
  return String(n);
}

/**
 * A JSON tokenizer just good enough to find number tokens outside strings and the element of the
 * top-level `data` array each lies in. Only runs on a suspicious body.
 */
function scan(text: string): UnexactEvent[] {
  const out: UnexactEvent[] = [];
  let depth = 0;
  let dataDepth = -1; // depth inside the data array, when in it
  let pendingKey: string | null = null;
  let lastString: string | null = null;
  let index = 0;
  let elementStart = -1;
  let elementReason: string | null = null;
  const endElement = (end: number) => {
    if (elementStart >= 0 && elementReason !== null) {
      out.push({ index, reason: elementReason, rawText: text.slice(elementStart, end).trim() });
    }
    if (elementStart >= 0) index++;
    elementStart = -1;
    elementReason = null;
  };
  const len = text.length;
  for (let i = 0; i < len; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
    if (dataDepth >= 0 && depth === dataDepth && elementStart < 0 && c !== 0x2c && c !== 0x5d) {
      elementStart = i;
    }
    if (c === 0x22 /* " */) {
      const start = i + 1;
      i++;
      while (i < len) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i += 2;
        else if (d === 0x22) break;
        else i++;
      }
      lastString = depth === 1 && i - start <= 16 ? text.slice(start, i) : null;
      continue;
    }
    if (c === 0x3a /* : */) {
      pendingKey = depth === 1 ? lastString : null;
      continue;
    }
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (c === 0x5b && depth === 2 && dataDepth < 0 && pendingKey === 'data') dataDepth = 2;
      pendingKey = null;
      continue;
    }
    if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      if (c === 0x5d && dataDepth >= 0 && depth === dataDepth) {
        endElement(i);
        dataDepth = -2; // the data array is closed; a second one is not looked at
      }
      depth--;
      continue;
    }
    if (c === 0x2c /* , */) {
      if (dataDepth >= 0 && depth === dataDepth) endElement(i);
      continue;
    }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      const start = i;
      while (i + 1 < len && /[0-9eE+\-.]/.test(text[i + 1] as string)) i++;
      if (dataDepth >= 0 && depth >= dataDepth && elementReason === null) {
        const tok = text.slice(start, i + 1);
        if (!isExactNumber(tok)) {
          elementReason =
            `number ${tok.length > 40 ? `${tok.slice(0, 40)}…` : tok} cannot be read exactly (JavaScript reads it as ${describeRead(tok)}): ` +
            'rejected rather than stored altered';
        }
      }
    }
    // true, false, null and anything else: letters are skipped one by one.
  }
  return out;
}

import { hash3, SALT, unit } from './hash.ts';

/*
 * Per-event data faults. Each is decided once per index from the seed, so an event is faulty every
 * time it is served and the set of rejects is known in advance.
 */

/** Per-event fault rates. */
export interface EventFaultRates {
  /** The timestamp is replaced by an unparseable value: the event is a reject. */
  malformedTimestampRate: number;
  /** One required field (sessionId, userId, type, name or timestamp) is left out: the event is a reject. */
  missingFieldRate: number;
  /** The timestamp is sent as epoch SECONDS with a millisecond fraction: still the same instant. */
  epochSecondsRate: number;
  /** The timestamp string is wrapped in zero-width/control characters: still the same instant. */
  controlCharRate: number;
  /** `properties` nests DEEP_PROPERTIES_DEPTH (10,000) levels deep: the event is a reject (depth limit). */
  deepPropertiesRate: number;
  /** `properties` carries a number JavaScript cannot read exactly (20 digits, 1e400 or 1e-400): a reject. */
  unexactNumberRate: number;
  /** `type` is `hacked_type`, outside the documented enum: a reject. */
  unknownTypeRate: number;
}

/** How deep a deepProperties fault nests `properties`. */
export const DEEP_PROPERTIES_DEPTH = 10_000;
/** The numbers an unexactNumber fault sends, by variant: what JSON writes and JavaScript cannot read back. */
export const UNEXACT_NUMBERS = ['12345678901234567890', '1e400', '1e-400'] as const;
/** The type an unknownType fault sends. */
export const UNKNOWN_TYPE = 'hacked_type';

export const MISSABLE_FIELDS = ['sessionId', 'userId', 'type', 'name', 'timestamp'] as const;
export type MissableField = (typeof MISSABLE_FIELDS)[number];

const MALFORMED_VALUES = ['Invalid Date', '', '2026-13-45T99:99:99.999Z', 'NaN'] as const;
const CONTROL_WRAPS: ReadonlyArray<readonly [string, string]> = [
  ['\u200b', ''],
  ['', '\u0007'],
  ['\ufeff', '\r\n'],
  ['\t', '\u200d'],
];

export type EventFault =
  | { kind: 'malformedTimestamp'; value: string }
  | { kind: 'missingField'; field: MissableField }
  | { kind: 'epochSeconds' }
  | { kind: 'controlChar'; prefix: string; suffix: string }
  | { kind: 'deepProperties' }
  | { kind: 'unexactNumber'; number: (typeof UNEXACT_NUMBERS)[number] }
  | { kind: 'unknownType' };

export interface EventFaults {
  readonly rates: Readonly<EventFaultRates>;
  readonly any: boolean;
  faultFor(index: number): EventFault | null;
  /** false when the served event cannot be normalised (malformed timestamp or a missing required field). */
  isValid(index: number): boolean;
}

/** `seed` is the data set's mixed seed; rates not given are 0. */
export function createEventFaults(seed: number, given: Partial<EventFaultRates> = {}): EventFaults {
  const rates: EventFaultRates = {
    malformedTimestampRate: given.malformedTimestampRate ?? 0,
    missingFieldRate: given.missingFieldRate ?? 0,
    epochSecondsRate: given.epochSecondsRate ?? 0,
    controlCharRate: given.controlCharRate ?? 0,
    deepPropertiesRate: given.deepPropertiesRate ?? 0,
    unexactNumberRate: given.unexactNumberRate ?? 0,
    unknownTypeRate: given.unknownTypeRate ?? 0,
  };
  // Cumulative edges: one uniform draw per index picks at most one fault.
  const order = [
    rates.malformedTimestampRate,
    rates.missingFieldRate,
    rates.epochSecondsRate,
    rates.controlCharRate,
    rates.deepPropertiesRate,
    rates.unexactNumberRate,
    rates.unknownTypeRate,
  ];
  const edges: number[] = [];
  let sum = 0;
  for (const r of order) {
    sum += r;
    edges.push(sum);
  }
  const last = sum;
  const any = last > 0;

  function faultFor(index: number): EventFault | null {
    if (!any) return null;
    const u = unit(hash3(seed, index, SALT.fault));
    if (u >= last) return null;
    const detail = hash3(seed, index, SALT.faultDetail);
    if (u < edges[0]!) {
      return { kind: 'malformedTimestamp', value: MALFORMED_VALUES[detail % MALFORMED_VALUES.length]! };
    }
    if (u < edges[1]!)
      return { kind: 'missingField', field: MISSABLE_FIELDS[detail % MISSABLE_FIELDS.length]! };
    if (u < edges[2]!) return { kind: 'epochSeconds' };
    if (u < edges[3]!) {
      const [prefix, suffix] = CONTROL_WRAPS[detail % CONTROL_WRAPS.length]!;
      return { kind: 'controlChar', prefix, suffix };
    }
    if (u < edges[4]!) return { kind: 'deepProperties' };
    if (u < edges[5]!)
      return { kind: 'unexactNumber', number: UNEXACT_NUMBERS[detail % UNEXACT_NUMBERS.length]! };
    return { kind: 'unknownType' };
  }

  return {
    rates,
    any,
    faultFor,
    isValid(index) {
      const f = faultFor(index);
      return f === null || f.kind === 'epochSeconds' || f.kind === 'controlChar';
    },
  };
}

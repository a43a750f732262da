/*
 * The family of upstreams the API notes allow (../shared/datasync-api.md): the window fixed or
 * sliding; Reset counted to the window's end, the oldest counted request's expiry or a full
 * window from the arrival, in whole seconds rounded up or down; refused requests counted or not;
 * 5xx answers and 404 lookups counted or not, with or without the rate-limit headers; answers of
 * 3.5-4 s with a slow tail; rows repeated across pages. Each member is a named combination;
 * together they cover every value of every reading. The window's length (20, 30 or 60 s) and the
 * latency are separate options, so each member runs at any of them. `default` is the
 * simulator's defaults as they were before the family existed.
 *
 * Kept free of imports so options.ts can build its schema from it.
 */

export interface FamilyMember {
  /** What the member stands for, for tables and the README. */
  about: string;
  options: {
    windowMode?: 'fixed' | 'sliding';
    resetBasis?: 'window-start' | 'oldest-counted' | 'arrival';
    resetRounding?: 'exact' | 'up' | 'down';
    windowAlign?: 'first-request' | 'clock';
    countRejected?: boolean;
    uncountedErrors?: boolean;
    errorHeaders?: boolean;
    latencyTailRate?: number;
    duplicateRowRate?: number;
  };
}

export const FAMILY = {
  default: {
    about:
      'fixed window from the first request, Reset to its end (exact), 429s not counted, 5xx counted without headers',
    options: {},
  },
  'fixed-down': {
    about:
      'fixed window, Reset to its end rounded down, 429s counted, 5xx and 404 not counted but with headers',
    options: {
      windowMode: 'fixed',
      resetBasis: 'window-start',
      resetRounding: 'down',
      countRejected: true,
      uncountedErrors: true,
      errorHeaders: true,
    },
  },
  'fixed-clock': {
    about:
      'fixed window on the clock, Reset from the oldest counted request rounded up, 5xx counted with headers, repeated rows',
    options: {
      windowMode: 'fixed',
      windowAlign: 'clock',
      resetBasis: 'oldest-counted',
      resetRounding: 'up',
      errorHeaders: true,
      duplicateRowRate: 0.02,
    },
  },
  'fixed-arrival': {
    about: 'fixed window, Reset a full window from the arrival rounded down, 429s counted',
    options: { windowMode: 'fixed', resetBasis: 'arrival', resetRounding: 'down', countRejected: true },
  },
  'sliding-oldest': {
    about:
      'sliding log, Reset to the oldest counted request expiring rounded up, 429s counted, 5xx counted with headers, a 1 % slow tail',
    options: {
      windowMode: 'sliding',
      resetBasis: 'oldest-counted',
      resetRounding: 'up',
      countRejected: true,
      errorHeaders: true,
      latencyTailRate: 0.01,
    },
  },
  'sliding-slot': {
    about: 'sliding log, Reset to the next free slot rounded down, 429s not counted, 5xx and 404 not counted',
    options: {
      windowMode: 'sliding',
      resetBasis: 'window-start',
      resetRounding: 'down',
      uncountedErrors: true,
    },
  },
  'sliding-arrival': {
    about: 'sliding log, Reset a full window from the arrival rounded up, 429s counted, repeated rows',
    options: {
      windowMode: 'sliding',
      resetBasis: 'arrival',
      resetRounding: 'up',
      countRejected: true,
      duplicateRowRate: 0.02,
    },
  },
} as const satisfies Record<string, FamilyMember>;

export type FamilyName = keyof typeof FAMILY;
export const FAMILY_NAMES = Object.keys(FAMILY) as [FamilyName, ...FamilyName[]];

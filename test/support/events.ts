import { randomUUID } from 'node:crypto';
import type { NormalisedEvent } from '#shared/upstream/types.ts';

/** 2026-01-20T08:30:00.123Z: the instant of every test event unless a test sets its own. */
export const T0 = Date.UTC(2026, 0, 20, 8, 30, 0, 123);

/** A valid normalised event with fresh UUIDs; `over` replaces any field. */
export function normalisedEvent(over: Partial<NormalisedEvent> = {}): NormalisedEvent {
  return {
    id: randomUUID(),
    sessionId: randomUUID(),
    userId: randomUUID(),
    type: 'page_view',
    name: 'event_abc',
    properties: { page: '/home' },
    occurredAtMs: T0,
    deviceType: 'desktop',
    browser: 'Chrome',
    ...over,
  };
}

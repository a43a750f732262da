import { describe, expect, it } from 'vitest';
import { KillSchedule } from '#local/twin/kills.ts';

/** A schedule whose timers run when the test says. */
function scheduleOf(plans: ConstructorParameters<typeof KillSchedule>[0]) {
  const timers: (() => void)[] = [];
  const schedule = new KillSchedule(
    plans,
    () => {},
    (fn) => void timers.push(fn),
  );
  const fire = () => {
    for (const fn of timers.splice(0)) fn();
  };
  return { schedule, fire };
}

describe('KillSchedule', () => {
  it('gives a kill to one invocation even when several chains are due at once', () => {
    const { schedule, fire } = scheduleOf([{ page: 1, anchor: 'request', delayMs: 10 }]);
    const a = schedule.forInvocation();
    const b = schedule.forInvocation();
    expect(a.events.onFetchStart).toBeDefined();
    expect(b.events.onFetchStart).toBeUndefined();
    let killed = 0;
    a.events.onFetchStart?.(() => ++killed > 0);
    fire();
    expect(killed).toBe(1);
    const report = a.settle(Object.assign(new Error('Runtime exited'), { name: 'Lambda.Unknown' }));
    expect(report).toMatchObject({
      invocation: 1,
      anchor: 'request',
      answerArrived: false,
      reportedAs: 'Lambda.Unknown: Runtime exited',
    });
    expect(b.settle(null)).toBeNull();
    expect(schedule.done).toHaveLength(1);
    // Done once: later invocations are left alone.
    expect(schedule.forInvocation().events.onFetchStart).toBeUndefined();
  });

  it('hands a kill on when its invocation ended before it was due', () => {
    const { schedule, fire } = scheduleOf([{ page: 2, anchor: 'request', delayMs: 1000 }]);
    expect(schedule.forInvocation().events.onFetchStart).toBeUndefined();
    const second = schedule.forInvocation();
    second.events.onFetchStart?.(() => false); // the sandbox already left this invocation
    fire();
    expect(second.settle(null)).toBeNull();
    const third = schedule.forInvocation();
    third.events.onFetchStart?.(() => true);
    fire();
    expect(third.settle(new Error('x'))).toMatchObject({ invocation: 3 });
  });

  it('waits for the answer with the answer anchor', () => {
    const { schedule, fire } = scheduleOf([{ page: 1, anchor: 'answer', delayMs: 0 }]);
    const inv = schedule.forInvocation();
    let killed = false;
    inv.events.onFetchStart?.(() => {
      killed = true;
      return true;
    });
    fire();
    expect(killed).toBe(false);
    inv.events.onFetchHeaders?.(200);
    fire();
    expect(killed).toBe(true);
    expect(inv.settle(new Error('gone'))).toMatchObject({ answerArrived: true });
  });
});

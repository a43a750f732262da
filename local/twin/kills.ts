import type { InvocationEvents } from './sandbox.ts';

/**
 * Which function processes a twin run SIGKILLs, and when. Each kill is done once: the sandbox
 * running the `page`-th FetchPage invocation (counted over every chain, retries included), or a
 * later one when that invocation ended before the kill was due, is killed `delayMs` after its
 * first request started (`request`: the request in flight) or after that request's answer arrived
 * (`answer`: the page being read, validated or written).
 */
export interface KillPlan {
  page: number;
  anchor: 'request' | 'answer';
  delayMs: number;
}

export interface KillReport extends KillPlan {
  /** The FetchPage invocation whose sandbox was killed. */
  invocation: number;
  /** Whether the answer's headers had arrived when the kill came. */
  answerArrived: boolean;
  /** The invocation's outcome as the state machine saw it. */
  reportedAs: string;
}

/** One invocation's part in the schedule: the events to hand the sandbox, and what to do after. */
export interface InvocationKill {
  events: InvocationEvents;
  /** The invocation ended with `error` (or without one): records how a kill was reported, or hands the kill back. */
  settle(error: Error | null): KillReport | null;
}

export class KillSchedule {
  readonly done: KillReport[] = [];
  private readonly pending: KillPlan[];
  /** Kills an invocation in flight holds: chains run at once, and a kill is for one of them. */
  private readonly claimed = new Set<KillPlan>();
  private invocations = 0;

  constructor(
    plans: readonly KillPlan[],
    private readonly onKill: (report: KillReport) => void = () => {},
    private readonly setTimer: (fn: () => void, ms: number) => void = (fn, ms) => void setTimeout(fn, ms),
  ) {
    this.pending = [...plans].sort((a, b) => a.page - b.page);
  }

  /** Called as each FetchPage invocation starts. */
  forInvocation(): InvocationKill {
    const n = ++this.invocations;
    const plan = this.pending.find((k) => k.page <= n && !this.claimed.has(k));
    if (!plan) return { events: {}, settle: () => null };
    this.claimed.add(plan);
    let report: KillReport | null = null;
    let answered = false;
    let kill: (() => boolean) | null = null;
    const schedule = () =>
      this.setTimer(() => {
        if (report || !kill?.()) return;
        this.pending.splice(this.pending.indexOf(plan), 1);
        report = { ...plan, invocation: n, answerArrived: answered, reportedAs: '' };
        this.done.push(report);
        this.onKill(report);
      }, plan.delayMs);
    const events: InvocationEvents = {
      onFetchStart: (killIt) => {
        if (kill) return;
        kill = killIt;
        if (plan.anchor === 'request') schedule();
      },
      onFetchHeaders: () => {
        if (answered) return;
        answered = true;
        if (plan.anchor === 'answer') schedule();
      },
    };
    return {
      events,
      settle: (error) => {
        const r = report as KillReport | null;
        if (r && error) r.reportedAs = `${error.name}: ${error.message}`;
        // Not killed (the invocation ended first, or made no request): the next one may take it.
        if (!r) this.claimed.delete(plan);
        kill = null;
        return r;
      },
    };
  }
}

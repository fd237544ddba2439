/**
 * How the replica's async hosts (join-host.ts, view-sync-host.ts, primary-host.ts) feed events
 * and the outcomes of actions into their synchronous core: each outcome exactly once, never as
 * an unhandled rejection, and each event's actions all carried out before the next is fed.
 */

/**
 * Runs `work` and feeds its outcome: `fed(value)` once it resolves; `failed(error)` if it throws,
 * rejects, or if `fed` throws (a failed assertion of the core, that is a bug: the host passes it
 * on like a failed action rather than let it escape from a promise callback).
 */
export function feedOutcome<T>(work: () => Promise<T>, fed: (value: T) => void, failed: (error: unknown) => void): void {
  let running: Promise<T>;
  try {
    running = work();
  } catch (error) {
    running = Promise.reject(error);
  }
  running.then((value) => {
    try {
      fed(value);
    } catch (error) {
      failed(error);
    }
  }, failed);
}

/**
 * A host's events in order. `feed` queues an event, and unless one is being fed already (an
 * action's listener fed this one), feeds the queued events one by one: the core's step, then
 * `afterStep` (the invariants check, when asked for), then every action it returned, in order,
 * before the next. So the position an event reads is the one its earlier actions left. A throw
 * (a bug) comes out of the `feed` that was draining; the events still queued are fed at the
 * next one.
 */
export class EventQueue<A> {
  private readonly events: Array<() => A[]> = [];
  private feeding = false;

  constructor(
    private readonly carryOut: (action: A) => void,
    private readonly afterStep: () => void,
  ) {}

  /** An event is being fed, or its actions carried out. */
  get draining(): boolean {
    return this.feeding;
  }

  feed(event: () => A[]): void {
    this.events.push(event);
    if (this.feeding) return;
    this.feeding = true;
    try {
      for (let next = this.events.shift(); next !== undefined; next = this.events.shift()) {
        const actions = next();
        this.afterStep();
        for (const action of actions) this.carryOut(action);
      }
    } finally {
      this.feeding = false;
    }
  }
}

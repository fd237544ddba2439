import type { Clock, Timer } from './env.js';

/** The real clock: Node timers and a monotonic millisecond counter. Host code only. */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimer(delayMs: number, fn: () => void): Timer {
    if (delayMs <= 0) {
      // Node clamps setTimeout(0) to 1 ms; a zero-delay timer ("soon, as an event of its own", as
      // the Notifier's pass after every execute) runs after the pending I/O of this turn instead.
      const immediate = setImmediate(fn);
      return { cancel: () => clearImmediate(immediate) };
    }
    const handle = setTimeout(fn, delayMs);
    return { cancel: () => clearTimeout(handle) };
  },
};

/**
 * Wall-clock time (ms since the epoch), for labels people read ("unreachable since 12:01:07").
 * Host code only, like realClock: protocol code takes time from its injected Clock and never
 * decides anything by the wall clock.
 */
export function wallClockMs(): number {
  return Date.now();
}

/** Resolves after `delayMs` on `clock`, or rejects with the signal's reason when it aborts. */
export function sleep(clock: Clock, delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      timer.cancel();
      reject(signal!.reason);
    };
    const timer = clock.setTimer(delayMs, () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * How the replica's async hosts (join-host.ts, view-sync-host.ts) feed the outcome of an action
 * back into their synchronous core: exactly once, and never as an unhandled rejection.
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

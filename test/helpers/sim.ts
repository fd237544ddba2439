/**
 * Helpers for tests that drive a SimWorld: run virtual time until a promise settles, with a bound
 * on virtual time so a protocol that never finishes fails the test instead of hanging it.
 */
import { LockError } from '../../lockserver/protocol.js';
import type { SimWorld } from '../../lib/sim/index.js';

export interface Tracked<T> {
  readonly promise: Promise<T>;
  settled: boolean;
  result: PromiseSettledResult<T> | undefined;
}

/** Observes `promise` without awaiting it, so a test can check later whether it settled. */
export function track<T>(promise: Promise<T>): Tracked<T> {
  const tracked: Tracked<T> = { promise, settled: false, result: undefined };
  promise.then(
    (value) => Object.assign(tracked, { settled: true, result: { status: 'fulfilled', value } }),
    (reason: unknown) => Object.assign(tracked, { settled: true, result: { status: 'rejected', reason } }),
  );
  return tracked;
}

/** Runs `world` until `promise` settles (at most `limitMs` of virtual time) and says how it settled. */
export async function settle<T>(world: SimWorld, promise: Promise<T>, limitMs = 600_000): Promise<PromiseSettledResult<T>> {
  const tracked = track(promise);
  if (!(await world.runUntil(() => tracked.settled, limitMs))) {
    throw new Error(`promise did not settle within ${limitMs} virtual ms`);
  }
  return tracked.result!;
}

/** Like `settle`, but returns the value and rethrows a rejection. */
export async function resolved<T>(world: SimWorld, promise: Promise<T>, limitMs?: number): Promise<T> {
  const result = await settle(world, promise, limitMs);
  if (result.status === 'rejected') throw result.reason;
  return result.value;
}

/** The LockError code `promise` rejected with, 'fulfilled', or a description of another error. */
export async function lockErrorCode(world: SimWorld, promise: Promise<unknown>, limitMs?: number): Promise<string> {
  const result = await settle(world, promise, limitMs);
  if (result.status === 'fulfilled') return 'fulfilled';
  return result.reason instanceof LockError ? result.reason.code : `not a LockError: ${String(result.reason)}`;
}

/**
 * Assertions for programmer errors. A failed assertion means a broken invariant: the process must
 * crash (a crash is a failure the protocols already survive; a wrong state is not). Never catch
 * AssertionError to carry on.
 */
export class AssertionError extends Error {
  override readonly name = 'AssertionError';
  readonly code = 'ASSERTION_FAILED';
}

export function assert(condition: unknown, message = 'assertion failed'): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/** Exhaustiveness check for discriminated unions: reaching it is a programmer error. */
export function assertNever(value: never, message = 'unexpected value'): never {
  throw new AssertionError(`${message}: ${JSON.stringify(value)}`);
}

/**
 * Documents that a condition may or may not hold at this point (both are legal). It checks nothing;
 * it tells the reader that the other case was considered, not forgotten.
 */
export function maybe(_condition: unknown): void {}

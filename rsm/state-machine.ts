/**
 * The one interface a service implements to be replicated by the RSM.
 *
 * The RSM hands every replica the same requests in the same viewstamp order; a service stays
 * consistent across replicas only if `execute` is deterministic: its result and its new state
 * depend on nothing but the current state and the request. So a service must not read a clock,
 * draw random numbers, do I/O or keep state outside what `marshalState` returns. Whatever it needs
 * of time arrives inside the request, stamped by the primary.
 *
 * `execute` runs to completion (no awaits): a request that must wait for something (a lock held by
 * another client) answers at once with a status that tells the client so (RETRY), and the service
 * records what it owes the client in its state.
 */
export interface StateMachine {
  /**
   * Executes one request. `proc` and `request` come from the client unchanged: they may be
   * malformed, and then the service answers with an error status instead of throwing. Throwing is
   * reserved for broken invariants (assertions), which crash the replica. `context` is the same
   * on every replica: it travels with the request.
   */
  execute(proc: number, request: Uint8Array, context: ExecuteContext): ExecuteResult;

  /** The complete state, as bytes, for state transfer to a replica that is behind. */
  marshalState(): Uint8Array;

  /**
   * Replaces the state with one produced by `marshalState` (possibly on another replica). Returns
   * an error reason for bytes that do not decode, leaving the state unchanged.
   */
  unmarshalState(state: Uint8Array): { readonly ok: true } | { readonly ok: false; readonly reason: string };
}

/**
 * What the RSM tells a service about a request beside its bytes. It is stamped once, by the
 * primary that stamps the request, and carried with the request to every replica (and into the
 * log), so every replica executes with the same values.
 */
export interface ExecuteContext {
  /** The request's viewstamp: the view it was stamped in and its sequence number there. */
  readonly vid: number;
  readonly seqno: number;
  /**
   * The stamping primary's clock (milliseconds, monotonic) when it stamped the request. Values are
   * comparable only between requests of one view: a new view may have a new primary whose clock
   * has another origin. A service that measures durations (leases) rebases them when `vid`
   * changes, and never lets time run backwards within a view.
   */
  readonly timeMs: number;
}

/** The context of requests executed outside any replica group (unreplicated hosts, tests). */
export function localContext(timeMs: number, seqno = 0): ExecuteContext {
  return { vid: 0, seqno, timeMs };
}

export interface ExecuteResult {
  /** Service status, ≥ 0 (0 is conventionally OK). */
  readonly status: number;
  /** The marshalled reply for the client. */
  readonly reply: Uint8Array;
}

/** The status every request gets from the EmptyStateMachine. */
export const EMPTY_MACHINE_STATUS = 1;

/**
 * The state machine of a replica that serves no service (membership-only hosts and tests): no
 * state, and every request is answered EMPTY_MACHINE_STATUS with an empty reply, without effect.
 */
export class EmptyStateMachine implements StateMachine {
  execute(_proc: number, _request: Uint8Array, _context?: ExecuteContext): ExecuteResult {
    return { status: EMPTY_MACHINE_STATUS, reply: new Uint8Array(0) };
  }

  marshalState(): Uint8Array {
    return new Uint8Array(0);
  }

  unmarshalState(state: Uint8Array): { readonly ok: true } | { readonly ok: false; readonly reason: string } {
    return state.length === 0 ? { ok: true } : { ok: false, reason: `the empty machine has no state (got ${state.length} bytes)` };
  }
}

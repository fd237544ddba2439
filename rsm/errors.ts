/**
 * Errors the RSM client raises. Codes are stable (documented in rsm/README.md); messages may change.
 */
import { ViewstampError } from '../lib/errors.js';

export type RsmErrorCode =
  /**
   * The call's overall deadline passed before any primary answered OK (no reachable member named a
   * primary that would serve: the group has no quorum, or is still changing views). The message
   * lists what each node tried answered; `cause` is the last failure. The request may have
   * executed if an invoke reached a primary that then died or was cut off.
   */
  | 'RSM_NO_QUORUM'
  /** The caller's AbortSignal fired. */
  | 'RSM_ABORTED'
  /** The client knows no member to ask (it was opened with an empty list). */
  | 'RSM_NO_MEMBERS'
  /** The client was closed before or during the call. */
  | 'RSM_CLOSED'
  /** A primary answered OK with a reply that does not decode (the request did execute). */
  | 'RSM_BAD_REPLY';

export class RsmError extends ViewstampError {
  override name = 'RsmError';
  declare readonly code: RsmErrorCode;
  constructor(code: RsmErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

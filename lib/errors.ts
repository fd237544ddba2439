/**
 * Errors a library user may see. Each carries a stable `code` (documented in the folder READMEs;
 * messages may change, codes do not) and `cause` when it wraps another error.
 */
export class ViewstampError extends Error {
  override name = 'ViewstampError';
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** RPC-layer failures. `code` is one of RpcErrorCode. */
export type RpcErrorCode =
  | 'RPC_TIMEOUT' // no reply before the call's deadline
  | 'RPC_ABORTED' // the caller's AbortSignal fired
  | 'RPC_FORGOTTEN' // the server already forgot this xid (the client acknowledged it)
  | 'RPC_OLDSRV' // the request was for an earlier instance of the server
  | 'RPC_BAD_ARGS' // the server could not decode the arguments
  | 'RPC_BAD_REPLY' // the client could not decode the reply
  | 'RPC_NO_SUCH_PROC' // the server does not serve this procedure
  | 'RPC_OVERLOADED' // the server refused without running it: too many calls from this client, or in flight
  | 'RPC_HANDLER_FAILED' // the handler threw (it may have had effects)
  | 'RPC_CLOSED' // the endpoint was closed
  | 'RPC_UNREACHABLE' // the transport could not connect to the destination (refused, unreachable)
  | 'RPC_CONNECTION_LOST'; // the connection the request went out on closed or was reset before the reply

export class RpcError extends ViewstampError {
  override name = 'RpcError';
  declare readonly code: RpcErrorCode;
  constructor(code: RpcErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

import createDebug from 'debug';

/**
 * Diagnostic logging through `debug` namespaces (`viewstamp:rpc`, `viewstamp:paxos`, …); enable
 * with DEBUG=viewstamp:*. Protocol output that tests read (paxos logs, RPC STATS) does not go here.
 */
export function logger(namespace: string): createDebug.Debugger {
  return createDebug(`viewstamp:${namespace}`);
}

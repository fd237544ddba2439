/**
 * `viewstamp/rsm`: replicate a service of one's own. Implement `StateMachine` (deterministic:
 * time only from `ExecuteContext.timeMs`), run it with `startReplica` on every replica, and call
 * it with an `RsmClient`. See README.md for the protocol and its limits.
 */
export type { StateMachine, ExecuteContext, ExecuteResult } from './state-machine.js';
export { EmptyStateMachine, localContext } from './state-machine.js';
export { RsmClient, type RsmClientOptions, type RsmInvokeOptions } from './client.js';
export { startReplica, type Replica, type ReplicaOptions } from './replica-process.js';
export * from './errors.js';

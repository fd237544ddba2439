/**
 * Test-only fault injection for the primary/backup lock service (the lab's kill and dying). No
 * program imports this module, and index.ts does not export it, so production code cannot reach it
 * by accident.
 *
 * The transport under the RPC layer (lib/tcp.ts) does not report refused or closed connections to
 * the RPC layer, so these faults act at the service's request boundary instead of on sockets:
 * - kill(server): the server stops serving at once. Every request that arrives from now on is
 *   answered UNAVAILABLE without being executed or forwarded, which a clerk treats exactly as a
 *   connection that failed at once (the lab's "new dials fail immediately"). Requests already
 *   executing finish, as requests on connections the lab had already accepted did.
 * - dying(server): the next request that arrives is executed and forwarded, its answer withheld;
 *   every other request meanwhile gets UNAVAILABLE; after 2 s the withheld request is answered
 *   UNAVAILABLE (its connection closes without a reply) and the server is dead.
 * A real process stop (SIGKILL) is the other way to fail a server: clerks then notice by timeout.
 */
import { faultHook, type FaultState, type PrimaryBackupLockServer } from './server.js';

export function kill(server: PrimaryBackupLockServer): void {
  server[faultHook].kill();
}

/** Arms `dying` (the lab's `dying = true`): it applies to the next request that arrives. */
export function dying(server: PrimaryBackupLockServer): void {
  server[faultHook].armDying();
}

export function faultState(server: PrimaryBackupLockServer): FaultState {
  return server[faultHook].state;
}

/**
 * The two-server primary/backup lock service (lab 1): try-lock Lock/Unlock on named locks, a
 * primary that forwards every operation to a backup, clerks that fail over to the backup for good.
 * See lockserver/README.md. The test-only fault hook lives in ./testing.js, not here.
 */
export * from './protocol.js';
export { PbLockCore, DEFAULT_MAX_CLERKS, DEFAULT_MAX_HELD_LOCKS, type PbMode, type PbRole, type PbLimits } from './core.js';
export { PrimaryBackupLockServer, DEFAULT_FORWARD_TIMEOUT_MS, DYING_DELAY_MS, type PbServerOptions, type PbServerConfig } from './server.js';
export * from './clerk.js';

/**
 * The clerk of the primary/backup lock service: `lock(name)` / `unlock(name)` resolve to booleans.
 *
 * Steps of one call:
 *   1. Check the name (1..256 UTF-8 bytes) and that no other call of this clerk is running.
 *   2. Take the next request id (clerk id, seq). The id stays the same for every attempt of this call.
 *   3. Unless it already switched, ask the primary (at most primaryTimeoutMs). OK → done. A primary
 *      that does not answer (timeout, UNAVAILABLE, any RPC failure) makes the clerk switch to the
 *      backup for good.
 *   4. Ask the backup with the same id, up to maxBackupAttempts times (backupTimeoutMs each,
 *      retryMs apart). The backup answers a request the primary already executed with the
 *      primary's original answer, without executing it again.
 *   5. Neither answered: PB_UNAVAILABLE (more than the one failure this service tolerates).
 */
import { sleep } from '../../lib/clock.js';
import { logger } from '../../lib/log.js';
import type { RpcClient, RpcEndpoint, RpcReply } from '../../lib/rpc.js';
import { normalizeAddress } from '../../lib/tcp.js';
import { PbLockError, PbStatus, isValidLockName, pbProtocol, type PbOp } from './protocol.js';
import { realClerkEndpoint } from './real-env.js';

const log = logger('pb');

export interface PbClerkOptions {
  /** The endpoint to call from. Default: a real TCP endpoint the clerk owns (closed by close()). */
  readonly rpc?: RpcEndpoint;
  readonly primaryTimeoutMs: number;
  readonly backupTimeoutMs: number;
  readonly maxBackupAttempts: number;
  readonly retryMs: number;
}

export const DEFAULT_PRIMARY_TIMEOUT_MS = 2_000;
export const DEFAULT_BACKUP_TIMEOUT_MS = 2_000;
export const DEFAULT_MAX_BACKUP_ATTEMPTS = 5;
export const DEFAULT_RETRY_MS = 100;

export class PrimaryBackupLockClerk {
  readonly primary: string;
  readonly backup: string;
  /** This clerk's id: the first half of every request id. */
  readonly id: number;
  private readonly rpc: RpcEndpoint;
  private readonly ownsRpc: boolean;
  private readonly options: Omit<PbClerkOptions, 'rpc'>;
  private readonly toPrimary: RpcClient;
  private readonly toBackup: RpcClient;
  private seq = 0;
  private switched = false;
  private busy = false;
  private closed = false;

  constructor(primary: string, backup: string, options: Partial<PbClerkOptions> = {}) {
    this.primary = normalizeAddress(primary);
    this.backup = normalizeAddress(backup);
    if (this.primary === this.backup) {
      throw new PbLockError('PB_SAME_ADDRESS', `primary and backup must be two servers, both are ${this.primary}`);
    }
    this.options = {
      primaryTimeoutMs: options.primaryTimeoutMs ?? DEFAULT_PRIMARY_TIMEOUT_MS,
      backupTimeoutMs: options.backupTimeoutMs ?? DEFAULT_BACKUP_TIMEOUT_MS,
      maxBackupAttempts: options.maxBackupAttempts ?? DEFAULT_MAX_BACKUP_ATTEMPTS,
      retryMs: options.retryMs ?? DEFAULT_RETRY_MS,
    };
    this.ownsRpc = options.rpc === undefined;
    this.rpc = options.rpc ?? realClerkEndpoint();
    // 52 random bits: ids of different clerks collide with negligible probability.
    this.id = this.rpc.random.u32() * 0x10_0000 + (this.rpc.random.u32() >>> 12);
    this.toPrimary = this.rpc.newClient(this.primary);
    this.toBackup = this.rpc.newClient(this.backup);
  }

  /** True once a call found the primary dead: every later call goes to the backup. */
  get usingBackup(): boolean {
    return this.switched;
  }

  lock(name: string): Promise<boolean> {
    return this.call('lock', name);
  }

  unlock(name: string): Promise<boolean> {
    return this.call('unlock', name);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.toPrimary.close();
    this.toBackup.close();
    if (this.ownsRpc) await this.rpc.close();
  }

  private async call(op: PbOp, name: string): Promise<boolean> {
    if (this.closed) throw new PbLockError('PB_CLERK_CLOSED', 'clerk is closed');
    if (!isValidLockName(name)) throw new PbLockError('PB_BAD_NAME', `lock name must be 1..256 bytes of UTF-8, got ${name.length} characters`);
    if (this.busy) throw new PbLockError('PB_CLERK_BUSY', 'a clerk makes one call at a time');
    this.busy = true;
    try {
      const request = { clerk: this.id, seq: ++this.seq, name };
      const procedure = op === 'lock' ? pbProtocol.lock : pbProtocol.unlock;
      if (!this.switched) {
        const reply = await this.toPrimary.call(procedure, request, { timeoutMs: this.options.primaryTimeoutMs });
        const answer = this.interpret(reply, op, name);
        if (answer !== undefined) return answer;
        log('clerk %d: primary %s did not answer (%s); switching to backup %s', this.id, this.primary, describe(reply), this.backup);
        this.switched = true;
      }
      let last = '';
      for (let attempt = 0; attempt < this.options.maxBackupAttempts; attempt++) {
        if (this.closed) throw new PbLockError('PB_CLERK_CLOSED', 'clerk is closed');
        if (attempt > 0) await sleep(this.rpc.clock, this.options.retryMs);
        const reply = await this.toBackup.call(procedure, request, { timeoutMs: this.options.backupTimeoutMs });
        const answer = this.interpret(reply, op, name);
        if (answer !== undefined) return answer;
        last = describe(reply);
      }
      throw new PbLockError('PB_UNAVAILABLE', `neither ${this.primary} nor ${this.backup} answered ${op} ${JSON.stringify(name)} (last: ${last}); outcome unknown`);
    } finally {
      this.busy = false;
    }
  }

  /** The answer, undefined when the server did not answer, or a thrown error for bad requests. */
  private interpret(reply: RpcReply<boolean>, op: PbOp, name: string): boolean | undefined {
    if (this.closed) throw new PbLockError('PB_CLERK_CLOSED', 'clerk is closed');
    if (!reply.ok) {
      if (reply.error.code === 'RPC_BAD_ARGS' || reply.error.code === 'RPC_NO_SUCH_PROC') {
        throw new PbLockError('PB_PROTOCOL', `${op} ${JSON.stringify(name)}: ${reply.error.code}`, { cause: reply.error });
      }
      return undefined;
    }
    switch (reply.status) {
      case PbStatus.OK:
        return reply.result;
      case PbStatus.BAD_NAME:
        throw new PbLockError('PB_BAD_NAME', `server refused lock name ${JSON.stringify(name)}`);
      case PbStatus.TABLE_FULL:
        throw new PbLockError('PB_TABLE_FULL', `server holds its maximum number of locks; ${op} ${JSON.stringify(name)} not executed`);
      case PbStatus.UNAVAILABLE:
      case PbStatus.STALE:
        return undefined;
      default:
        throw new PbLockError('PB_PROTOCOL', `${op} ${JSON.stringify(name)}: unexpected status ${reply.status}`);
    }
  }
}

function describe(reply: RpcReply<boolean>): string {
  return reply.ok ? `status ${reply.status}` : reply.error.code;
}

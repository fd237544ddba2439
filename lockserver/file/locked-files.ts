/**
 * One replicated StateMachine serving both the lock service and the file service it fences: file
 * requests (0x72xx) go to the FileService, everything else to the lock service. Both live in one
 * replica group, so an append is checked against the lock table as it is at that append's place in
 * the viewstamp order: a hold that ended before the append cannot write, whatever the delays.
 *
 * State: the lock service's marshalled state and the file service's, each length-prefixed.
 * `unmarshalState` installs both or neither.
 */
import { assert } from '../../lib/assert.js';
import { Reader, Writer } from '../../lib/codec.js';
import type { ExecuteContext, ExecuteResult, StateMachine } from '../../rsm/state-machine.js';
import type { FileService } from './file-service.js';

/** File procedures are 0x7200 … 0x72ff. */
export function isFileProc(proc: number): boolean {
  return proc >= 0x7200 && proc <= 0x72ff;
}

const STATE_VERSION = 1;

export class LockedFileService<Locks extends StateMachine = StateMachine> implements StateMachine {
  constructor(
    readonly locks: Locks,
    readonly files: FileService,
  ) {}

  execute(proc: number, request: Uint8Array, context: ExecuteContext): ExecuteResult {
    return isFileProc(proc) ? this.files.execute(proc, request, context) : this.locks.execute(proc, request, context);
  }

  marshalState(): Uint8Array {
    return new Writer(1024).u8(STATE_VERSION).bytes(this.locks.marshalState()).bytes(this.files.marshalState()).finish();
  }

  unmarshalState(state: Uint8Array): { readonly ok: true } | { readonly ok: false; readonly reason: string } {
    const r = new Reader(state);
    const version = r.u8();
    const locks = r.bytes();
    const files = r.bytes();
    const done = r.finish(undefined);
    if (!done.ok) return { ok: false, reason: `lock+file state: ${done.reason}` };
    if (version !== STATE_VERSION) return { ok: false, reason: `lock+file state version ${version}, expected ${STATE_VERSION}` };
    const before = this.locks.marshalState();
    const lockResult = this.locks.unmarshalState(locks);
    if (!lockResult.ok) return lockResult;
    const fileResult = this.files.unmarshalState(files);
    if (!fileResult.ok) {
      // Put the lock table back, so a refused state changes nothing.
      const restored = this.locks.unmarshalState(before);
      assert(restored.ok, 'the lock service refused its own state');
      return fileResult;
    }
    return { ok: true };
  }
}

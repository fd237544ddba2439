import fc from 'fast-check';
import t from 'tap';
import { CachingLockClientCore, type ClientAction } from '../lockserver/cache-client-core.js';
import { CacheProc, LockStatus, decodeTokenReply, encodeCacheLockRequest } from '../lockserver/cache-protocol.js';
import { CachingLockServer } from '../lockserver/cache-server.js';

const { OK, RETRY, NOENT, IOERR, RPCERR } = LockStatus;
type Action = ClientAction<string>;

t.test('a cached lock passes between local callers without the server', async (t) => {
  const core = new CachingLockClientCore<string>();
  t.same(core.localAcquire('1', 'w1'), [{ type: 'sendAcquire', lid: '1', xid: 1 }]);
  t.same(core.localAcquire('1', 'w2'), [], 'one outstanding acquire per lock');
  t.equal(core.stateOf('1'), 'acquiring');
  t.same(core.acquireReplied('1', 1, OK), [{ type: 'grantLocal', lid: '1', token: 'w1', fencingToken: 0 }]);
  t.same(core.localRelease('1'), [{ type: 'grantLocal', lid: '1', token: 'w2', fencingToken: 0 }]);
  t.same(core.localRelease('1'), []);
  t.equal(core.stateOf('1'), 'free', 'kept in the cache');
  t.same(core.localAcquire('1', 'w3'), [{ type: 'grantLocal', lid: '1', token: 'w3', fencingToken: 0 }], 'no RPC for a cached lock');
  core.invariants();
});

t.test('a revoke returns the lock once the local holder releases; later callers re-acquire', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  core.acquireReplied('1', 1, OK);
  core.localAcquire('1', 'w2');
  t.same(core.revoke('1', 1), [], 'held locally: wait');
  t.same(
    core.localRelease('1'),
    [
      { type: 'sendRelease', lid: '1', xid: 1, orphan: true },
      { type: 'sendAcquire', lid: '1', xid: 2 },
    ],
    'w2 waits: the lock goes back, and a fresh attempt goes right behind it',
  );
  t.equal(core.stateOf('1'), 'acquiring');
  t.same(core.revoke('1', 1), [{ type: 'sendRelease', lid: '1', xid: 1, orphan: true }], 'a repeated revoke of the old hold: the release again');
  t.same(core.releaseReplied('1', 1, OK), [], 'the orphan release needs no answer');
  t.same(core.acquireReplied('1', 2, RETRY), [{ type: 'startRetryTimer', lid: '1' }], 'queued behind the remote waiter');
  t.same(core.granted('1', 2, 7), [{ type: 'grantLocal', lid: '1', token: 'w2', fencingToken: 7 }], 'handed back later');
  core.invariants();
});

t.test('the release of a lock given back to ask again is lost: the new attempt finds the hold and keeps it', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  core.acquireReplied('1', 1, OK, 5);
  core.revoke('1', 1);
  core.localAcquire('1', 'w2');
  t.same(core.localRelease('1'), [
    { type: 'sendRelease', lid: '1', xid: 1, orphan: true },
    { type: 'sendAcquire', lid: '1', xid: 2 },
  ]);
  // The server never saw the release: it moves the hold (us, 1) to (us, 2) and answers OK.
  t.same(core.acquireReplied('1', 2, OK, 5), [{ type: 'grantLocal', lid: '1', token: 'w2', fencingToken: 5 }]);
  t.same(core.revoke('1', 2), [], 'the next revoke waits for the local holder');
  t.same(core.localRelease('1'), [{ type: 'sendRelease', lid: '1', xid: 2 }], 'nobody local waits: an ordinary release');
  t.equal(core.stateOf('1'), 'releasing');
  core.invariants();
});

t.test('a caller that comes once the release is out asks again at once, right behind it', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  core.acquireReplied('1', 1, OK, 5);
  core.revoke('1', 1);
  t.same(core.localRelease('1'), [{ type: 'sendRelease', lid: '1', xid: 1 }], 'nobody local waits: an ordinary release');
  t.same(core.localAcquire('1', 'w2'), [{ type: 'sendAcquire', lid: '1', xid: 2 }], 'the attempt follows the release in flight, without a second release');
  t.equal(core.stateOf('1'), 'acquiring');
  core.invariants();
  t.same(core.releaseReplied('1', 1, OK), [], 'the release became an orphan: its reply is ignored');
  t.same(core.releaseFailed('1', 1), [], '...and so is a failure of it');
  t.same(core.acquireReplied('1', 2, RETRY), [{ type: 'startRetryTimer', lid: '1' }], 'queued behind the remote waiter');
  t.same(core.granted('1', 2, 9), [{ type: 'grantLocal', lid: '1', token: 'w2', fencingToken: 9 }]);
  t.same(core.retryTimerFired('1'), [], 'the RETRY timer finds the lock held');
  core.invariants();

  // The release failed and waits for its resend: it goes out again now, as an orphan, ahead of the attempt.
  core.revoke('1', 2);
  t.same(core.localRelease('1'), [{ type: 'sendRelease', lid: '1', xid: 2 }]);
  t.same(core.releaseFailed('1', 2), [{ type: 'startRetryTimer', lid: '1' }]);
  t.same(core.localAcquire('1', 'w3'), [
    { type: 'sendRelease', lid: '1', xid: 2, orphan: true },
    { type: 'sendAcquire', lid: '1', xid: 3 },
  ]);
  core.invariants();
  t.same(core.retryTimerFired('1'), [], 'the release timer finds the attempt in flight: nothing to resend');
  t.same(core.acquireReplied('1', 3, OK, 11), [{ type: 'grantLocal', lid: '1', token: 'w3', fencingToken: 11 }]);
  core.invariants();
});

t.test('a grant notice is the lock: no second acquire; late replies, repeats and stale grants change nothing', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  t.same(core.acquireReplied('1', 1, RETRY), [{ type: 'startRetryTimer', lid: '1' }], 'queued at the server');
  t.same(core.granted('1', 1, 42), [{ type: 'grantLocal', lid: '1', token: 'w1', fencingToken: 42 }], 'held at once, with the hand-off token');
  t.equal(core.fencingTokenOf('1'), 42);
  t.same(core.granted('1', 1, 42), [], 'a resent grant for the hold we have');
  t.same(core.retryTimerFired('1'), [], 'the retry timer finds the lock held: nothing to ask');
  t.same(core.localRelease('1'), [], 'cached');
  t.same(core.granted('1', 7, 43), [], 'a grant for an attempt that is not ours now');
  core.invariants();

  // The grant overtakes the attempt's own reply (still in flight).
  core.localAcquire('2', 'w2');
  t.same(core.granted('2', 2, 50), [{ type: 'grantLocal', lid: '2', token: 'w2', fencingToken: 50 }]);
  t.same(core.acquireReplied('2', 2, RETRY), [], 'the late RETRY is ignored');
  t.same(core.revoke('2', 2), [], 'a revoke waits for the local holder');
  t.same(core.localRelease('2'), [{ type: 'sendRelease', lid: '2', xid: 2 }], 'the release ends the grant notice');
  core.invariants();

  // A reply lost (resend pending on the timer), then the grant.
  core.localAcquire('3', 'w3');
  t.same(core.acquireFailed('3', 3), [{ type: 'startRetryTimer', lid: '3' }]);
  t.same(core.granted('3', 3, 60), [{ type: 'grantLocal', lid: '3', token: 'w3', fencingToken: 60 }], 'no resend needed');
  t.same(core.retryTimerFired('3'), [], 'and the timer resends nothing');
  core.invariants();
});

t.test('RETRY waits for retry (or the timer); a retry that overtakes the RETRY is remembered', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  t.same(core.acquireReplied('1', 1, RETRY), [{ type: 'startRetryTimer', lid: '1' }]);
  t.same(core.retry('1', 7), [], 'a retry for another attempt is stale');
  t.same(core.retry('1', 1), [{ type: 'sendAcquire', lid: '1', xid: 2 }]);
  t.same(core.retry('1', 2), [], 'the retry overtook the RETRY reply');
  t.same(core.acquireReplied('1', 2, RETRY), [{ type: 'sendAcquire', lid: '1', xid: 3 }], '...so re-ask at once');
  t.same(core.acquireReplied('1', 3, RETRY), [], 'the timer is already running');
  t.same(core.retryTimerFired('1'), [{ type: 'sendAcquire', lid: '1', xid: 4 }], 'the lost retry is made up by the timer');
  t.same(core.acquireReplied('1', 3, OK), [], 'a reply for an older attempt is ignored');
  t.same(core.acquireReplied('1', 4, OK), [{ type: 'grantLocal', lid: '1', token: 'w1', fencingToken: 0 }]);
  core.invariants();
});

t.test('a revoke that overtakes the OK: one local caller uses the lock, then it goes back', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  core.localAcquire('1', 'w2');
  t.same(core.revoke('1', 1), []);
  t.same(core.acquireReplied('1', 1, OK), [{ type: 'grantLocal', lid: '1', token: 'w1', fencingToken: 0 }]);
  t.same(
    core.localRelease('1'),
    [
      { type: 'sendRelease', lid: '1', xid: 1, orphan: true },
      { type: 'sendAcquire', lid: '1', xid: 2 },
    ],
    'w2 must wait for the next attempt',
  );
  core.invariants();
});

t.test('failed RPCs are resent with the same xid; IOERR/RPCERR re-ask with a fresh one', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  t.same(core.acquireFailed('1', 1), [{ type: 'startRetryTimer', lid: '1' }]);
  t.same(core.retryTimerFired('1'), [{ type: 'sendAcquire', lid: '1', xid: 1 }], 'same xid: the server dedups it');
  t.same(core.acquireReplied('1', 1, IOERR), [{ type: 'startRetryTimer', lid: '1' }]);
  t.same(core.retryTimerFired('1'), [{ type: 'sendAcquire', lid: '1', xid: 2 }]);
  t.same(core.acquireReplied('1', 2, OK), [{ type: 'grantLocal', lid: '1', token: 'w1', fencingToken: 0 }]);
  core.revoke('1', 2);
  t.same(core.localRelease('1'), [{ type: 'sendRelease', lid: '1', xid: 2 }]);
  t.same(core.releaseFailed('1', 2), [{ type: 'startRetryTimer', lid: '1' }]);
  t.same(core.retryTimerFired('1'), [{ type: 'sendRelease', lid: '1', xid: 2 }]);
  t.same(core.releaseReplied('1', 2, OK), []);
  t.equal(core.stateOf('1'), 'none');
  t.same(core.lockIds(), [], 'forgotten once idle');
  core.invariants();
});

t.test('IOERR gives back the cached locks nobody uses', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  core.acquireReplied('1', 1, OK);
  core.localRelease('1'); // 1 is cached, unused
  core.localAcquire('2', 'w2');
  core.acquireReplied('2', 2, OK); // 2 is held locally
  core.localAcquire('3', 'w3');
  t.same(
    core.acquireReplied('3', 3, IOERR),
    [
      { type: 'sendRelease', lid: '1', xid: 1 },
      { type: 'sendAcquire', lid: '3', xid: 4 },
    ],
    'the unused lock goes back, and the attempt is renewed at once, behind the release',
  );
  t.equal(core.stateOf('2'), 'locked', 'a lock in use stays');
  core.invariants();
  t.same(core.acquireReplied('3', 4, IOERR), [{ type: 'startRetryTimer', lid: '3' }], 'nothing left to give back: ask again after the interval');
  t.same(core.retryTimerFired('3'), [{ type: 'sendAcquire', lid: '3', xid: 5 }]);
  core.invariants();
});

t.test('a revoke for a hold we do not have is answered with an orphan release', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  core.acquireReplied('1', 1, OK);
  core.localRelease('1');
  core.revoke('1', 1);
  core.releaseReplied('1', 1, OK);
  t.same(core.revoke('1', 1), [{ type: 'sendRelease', lid: '1', xid: 1, orphan: true }], 'late revoke: harmless orphan release');
  t.same(core.revoke('1', 99), [], 'an xid never issued is ignored');
  core.invariants();
});

t.test('close fails waiters and gives cached locks back', async (t) => {
  const core = new CachingLockClientCore<string>();
  core.localAcquire('1', 'w1');
  core.acquireReplied('1', 1, OK);
  core.localAcquire('1', 'w2');
  core.localAcquire('2', 'w3');
  const actions = core.close();
  t.same(actions, [
    { type: 'failLocal', lid: '1', token: 'w2', reason: 'closed' },
    { type: 'sendRelease', lid: '1', xid: 1 },
    { type: 'failLocal', lid: '2', token: 'w3', reason: 'closed' },
  ]);
  t.same(core.acquireReplied('2', 2, OK), [{ type: 'sendRelease', lid: '2', xid: 2 }], 'a grant arriving after close goes straight back');
  core.invariants();
});

// ---------------------------------------------------------------------------------------------
// Model-based: one core against arbitrary (even inconsistent) server behaviour.

interface Outstanding {
  readonly kind: 'acquire' | 'release';
  readonly lid: string;
  readonly xid: number;
}

/** Watches the actions of one core and checks the client-side rules. */
class CoreChecker {
  readonly holders = new Map<string, string>();
  readonly waiting = new Map<string, string>(); // token → lid
  readonly outstanding: Outstanding[] = [];
  /** Releases still in flight that a new attempt turned into orphans: their outcome must change nothing. */
  readonly orphaned: Outstanding[] = [];
  readonly timers: string[] = [];
  readonly revoked = new Set<string>(); // `${lid}/${xid}` revoked by the server
  readonly serverGranted = new Map<string, number>(); // lid → xid of the last OK for it
  readonly failedAcquires = new Set<string>(); // `${lid}/${xid}` whose outcome is unknown
  maxXid = 0;
  closed = false;
  grants = 0;
  releases = 0;
  releasesOrphaned = 0;

  /** `shedding`: the actions answer an IOERR, after which unused cached locks may go back. */
  apply(actions: readonly Action[], shedding = false): void {
    for (const a of actions) {
      switch (a.type) {
        case 'sendAcquire': {
          // A tracked release in flight becomes an orphan when the attempt goes right behind it.
          const behind = this.outstanding.findIndex((o) => o.lid === a.lid && o.kind === 'release');
          if (behind >= 0) {
            this.orphaned.push(...this.outstanding.splice(behind, 1));
            this.releasesOrphaned++;
          }
          if (this.outstanding.some((o) => o.lid === a.lid)) throw new Error(`second outstanding RPC for ${a.lid}`);
          const resend = this.failedAcquires.delete(`${a.lid}/${a.xid}`);
          if (!resend && a.xid <= this.maxXid) throw new Error(`acquire ${a.lid} reuses xid ${a.xid}`);
          if (this.closed && !resend) throw new Error('new attempt after close');
          this.maxXid = Math.max(this.maxXid, a.xid);
          this.outstanding.push({ kind: 'acquire', lid: a.lid, xid: a.xid });
          break;
        }
        case 'sendRelease':
          if (a.orphan) {
            if (!this.revoked.has(`${a.lid}/${a.xid}`)) throw new Error(`orphan release ${a.lid}/${a.xid} without a revoke`);
            this.releases++;
            break;
          }
          if (this.outstanding.some((o) => o.lid === a.lid)) throw new Error(`second outstanding RPC for ${a.lid}`);
          if (!this.revoked.has(`${a.lid}/${a.xid}`) && !this.closed && !shedding) throw new Error(`release ${a.lid}/${a.xid} without a revoke`);
          if (shedding) this.revoked.add(`${a.lid}/${a.xid}`); // its resends are legitimate too
          if (this.holders.has(a.lid)) throw new Error(`release ${a.lid} while a local caller holds it`);
          this.outstanding.push({ kind: 'release', lid: a.lid, xid: a.xid });
          this.releases++;
          break;
        case 'grantLocal':
          if (this.holders.has(a.lid)) throw new Error(`two local holders of ${a.lid}`);
          if (this.waiting.get(a.token) !== a.lid) throw new Error(`grant to ${a.token}, which does not wait for ${a.lid}`);
          if (!this.serverGranted.has(a.lid)) throw new Error(`grant of ${a.lid} the server never granted`);
          this.waiting.delete(a.token);
          this.holders.set(a.lid, a.token);
          this.grants++;
          break;
        case 'failLocal':
          if (!this.closed) throw new Error('failLocal before close');
          if (this.waiting.get(a.token) !== a.lid) throw new Error(`fail of ${a.token}, which does not wait`);
          this.waiting.delete(a.token);
          break;
        case 'startRetryTimer':
          if (this.timers.includes(a.lid)) throw new Error(`second retry timer for ${a.lid}`);
          this.timers.push(a.lid);
          break;
      }
    }
  }
}

type Step = { readonly pick: number; readonly arg: number; readonly arg2: number };

t.test('the client core keeps its rules against arbitrary server behaviour (fast-check)', async (t) => {
  const statuses = [OK, OK, OK, RETRY, IOERR, RPCERR, NOENT];
  let totalGrants = 0;
  let totalReleases = 0;
  let totalOrphaned = 0;
  fc.assert(
    fc.property(
      fc.array(fc.record({ pick: fc.nat(99), arg: fc.nat(1000), arg2: fc.nat(1000) }), { minLength: 50, maxLength: 300 }),
      (steps: Step[]) => {
        const core = new CachingLockClientCore<string>();
        const c = new CoreChecker();
        let nextToken = 0;
        const lids = ['1', '2'];
        for (const { pick, arg, arg2 } of steps) {
          const lid = lids[arg % lids.length]!;
          if (pick < 15) {
            if (c.closed) continue;
            const token = `w${nextToken++}`;
            c.waiting.set(token, lid);
            c.apply(core.localAcquire(lid, token));
          } else if (pick < 30) {
            if (!core.isLocallyHeld(lid)) continue;
            if (c.holders.get(lid) === undefined) throw new Error('core holds but checker does not');
            c.holders.delete(lid);
            c.apply(core.localRelease(lid));
          } else if (pick < 35) {
            const tokens = [...c.waiting.keys()];
            if (tokens.length === 0) continue;
            const token = tokens[arg % tokens.length]!;
            if (!core.localAbandon(c.waiting.get(token)!, token)) throw new Error('a waiting token was not queued');
            c.waiting.delete(token);
          } else if (pick < 40 && c.orphaned.length > 0) {
            // The outcome of a release that became an orphan: ignored.
            const o = c.orphaned.splice(arg % c.orphaned.length, 1)[0]!;
            const outcome = arg2 % 5 === 0 ? core.releaseFailed(o.lid, o.xid) : core.releaseReplied(o.lid, o.xid, statuses[arg2 % statuses.length]!);
            if (outcome.length > 0) throw new Error(`the outcome of orphaned release ${o.lid}/${o.xid} acted: ${JSON.stringify(outcome)}`);
          } else if (pick < 60) {
            if (c.outstanding.length === 0) continue;
            const o = c.outstanding.splice(arg % c.outstanding.length, 1)[0]!;
            const fail = arg2 % 5 === 0;
            const status = statuses[arg2 % statuses.length]!;
            if (o.kind === 'acquire') {
              if (fail) c.failedAcquires.add(`${o.lid}/${o.xid}`);
              else if (status === OK) c.serverGranted.set(o.lid, o.xid);
              c.apply(fail ? core.acquireFailed(o.lid, o.xid) : core.acquireReplied(o.lid, o.xid, status), !fail && status === IOERR);
            } else {
              if (!fail) c.serverGranted.delete(o.lid);
              c.apply(fail ? core.releaseFailed(o.lid, o.xid) : core.releaseReplied(o.lid, o.xid, status));
            }
          } else if (pick < 70) {
            // A revoke for the current attempt/hold, or for some other xid.
            const xid = arg2 % 2 === 0 ? core.xidOf(lid) : arg2 % 7;
            if (xid === 0) continue;
            c.revoked.add(`${lid}/${xid}`);
            c.apply(core.revoke(lid, xid));
          } else if (pick < 78) {
            const xid = arg2 % 2 === 0 ? core.xidOf(lid) : arg2 % 7;
            c.apply(core.retry(lid, xid));
          } else if (pick < 90) {
            if (c.timers.length === 0) continue;
            const [timerLid] = c.timers.splice(arg % c.timers.length, 1);
            c.apply(core.retryTimerFired(timerLid!));
          } else if (pick < 97) {
            // Late duplicate replies for old xids.
            const xid = 1 + (arg2 % Math.max(1, c.maxXid));
            if (c.outstanding.some((o) => o.lid === lid && o.xid === xid)) continue;
            const late = statuses[arg2 % statuses.length]!;
            c.apply(arg % 2 === 0 ? core.acquireReplied(lid, xid, late) : core.releaseReplied(lid, xid, OK), arg % 2 === 0 && late === IOERR);
          } else if (pick === 99 && arg % 4 === 0 && !c.closed) {
            c.closed = true;
            c.holders.clear(); // local holders lose their locks at close
            c.apply(core.close());
          }
          core.invariants();
          for (const l of lids) {
            if ((core.localHolderOf(l) === undefined) !== !c.holders.has(l)) throw new Error(`local holder of ${l} disagrees`);
          }
        }
        totalGrants += c.grants;
        totalReleases += c.releases;
        totalOrphaned += c.releasesOrphaned;
      },
    ),
    { numRuns: 1000 },
  );
  t.ok(totalGrants > 2000 && totalReleases > 1000, `grants ${totalGrants}, releases sent (orphans included) ${totalReleases}`);
  t.ok(totalOrphaned > 20, `releases in flight turned orphan by the next attempt: ${totalOrphaned}`);
});

// ---------------------------------------------------------------------------------------------
// Several cores and the real server, with a randomized (lossy, duplicating, reordering) network of
// messages delivered one at a time.

interface Message {
  readonly client: number;
  readonly kind: 'acquire' | 'release';
  readonly lid: string;
  readonly xid: number;
  readonly orphan: boolean;
  /** undefined while the request travels; the status once the server answered. */
  status: number | undefined;
  /** The fencing token of an OK answer. */
  token?: number;
}

interface Caller {
  readonly client: number;
  readonly token: string;
  state: 'idle' | 'waiting' | 'holding';
  lid: string;
}

class MiniCluster {
  readonly server = new CachingLockServer();
  readonly cores: Array<CachingLockClientCore<string>> = [];
  readonly callers: Caller[] = [];
  readonly messages: Message[] = [];
  readonly timers: Array<{ client: number; lid: string }> = [];
  grants = 0;

  constructor(readonly clients: number, callersPerClient: number, readonly lids: readonly string[]) {
    for (let c = 0; c < clients; c++) {
      this.cores.push(new CachingLockClientCore<string>());
      for (let w = 0; w < callersPerClient; w++) this.callers.push({ client: c, token: `c${c}/w${w}`, state: 'idle', lid: '0' });
    }
  }

  id(client: number): string {
    return `client${client}`;
  }

  apply(client: number, actions: readonly Action[]): void {
    for (const a of actions) {
      switch (a.type) {
        case 'sendAcquire':
        case 'sendRelease':
          this.messages.push({ client, kind: a.type === 'sendAcquire' ? 'acquire' : 'release', lid: a.lid, xid: a.xid, orphan: a.type === 'sendRelease' && a.orphan === true, status: undefined });
          break;
        case 'grantLocal': {
          const caller = this.callers.find((c) => c.token === a.token)!;
          if (caller.state !== 'waiting' || caller.lid !== a.lid) throw new Error(`grant to ${a.token} which does not wait for ${a.lid}`);
          caller.state = 'holding';
          this.grants++;
          break;
        }
        case 'failLocal':
          throw new Error('nobody closes here');
        case 'startRetryTimer':
          this.timers.push({ client, lid: a.lid });
          break;
      }
    }
    this.cores[client]!.invariants();
  }

  /** Mutual exclusion across all callers of all clients, and agreement with the server's table. */
  check(): void {
    for (const lid of this.lids) {
      const holders = this.callers.filter((c) => c.state === 'holding' && c.lid === lid);
      if (holders.length > 1) throw new Error(`lock ${lid} held by ${holders.map((h) => h.token).join(' and ')}`);
      const holder = holders[0];
      if (holder !== undefined && this.server.holderOf(lid)?.id !== this.id(holder.client)) {
        throw new Error(`${holder.token} holds ${lid} but the server says ${JSON.stringify(this.server.holderOf(lid))}`);
      }
    }
    this.server.invariants();
  }

  deliver(index: number, faulty: boolean, choice: number): void {
    const m = this.messages[index]!;
    const core = this.cores[m.client]!;
    if (m.status === undefined) {
      const proc = m.kind === 'acquire' ? CacheProc.ACQUIRE : CacheProc.RELEASE;
      const result = this.server.execute(proc, encodeCacheLockRequest({ lid: m.lid, id: this.id(m.client), xid: m.xid }));
      m.status = result.status;
      const token = decodeTokenReply(result.reply);
      m.token = token.ok ? token.value : 0;
      if (faulty && choice % 3 === 0) this.server.execute(proc, encodeCacheLockRequest({ lid: m.lid, id: this.id(m.client), xid: m.xid })); // duplicate
      if (faulty && choice % 3 === 1) return; // leave the reply in flight, for reordering
      this.messages.splice(index, 1);
      if (faulty && choice % 5 === 2) return this.fail(m, core); // reply lost
      return this.reply(m, core);
    }
    this.messages.splice(index, 1);
    this.reply(m, core);
  }

  loseRequest(index: number): void {
    const m = this.messages.splice(index, 1)[0]!;
    this.fail(m, this.cores[m.client]!);
  }

  private reply(m: Message, core: CachingLockClientCore<string>): void {
    if (m.orphan) return;
    this.apply(m.client, m.kind === 'acquire' ? core.acquireReplied(m.lid, m.xid, m.status!, m.token ?? 0) : core.releaseReplied(m.lid, m.xid, m.status!));
  }

  private fail(m: Message, core: CachingLockClientCore<string>): void {
    if (m.orphan) return;
    this.apply(m.client, m.kind === 'acquire' ? core.acquireFailed(m.lid, m.xid) : core.releaseFailed(m.lid, m.xid));
  }

  notify(index: number): void {
    const notices = this.server.pendingNotices();
    if (notices.length === 0) return;
    const n = notices[index % notices.length]!;
    const client = Number(n.to.slice('client'.length));
    const core = this.cores[client]!;
    this.apply(client, n.kind === 'revoke' ? core.revoke(n.lid, n.xid) : n.kind === 'grant' ? core.granted(n.lid, n.xid, n.token) : core.retry(n.lid, n.xid));
  }

  fireTimer(index: number): void {
    if (this.timers.length === 0) return;
    const { client, lid } = this.timers.splice(index % this.timers.length, 1)[0]!;
    this.apply(client, this.cores[client]!.retryTimerFired(lid));
  }

  callerStep(index: number, lidChoice: number): void {
    const caller = this.callers[index % this.callers.length]!;
    const core = this.cores[caller.client]!;
    if (caller.state === 'idle') {
      caller.state = 'waiting';
      caller.lid = this.lids[lidChoice % this.lids.length]!;
      this.apply(caller.client, core.localAcquire(caller.lid, caller.token));
    } else if (caller.state === 'holding') {
      caller.state = 'idle'; // the checker's view changes before the release, as in lock_tester
      this.apply(caller.client, core.localRelease(caller.lid));
    }
  }

  /** Fault-free, fair rounds until every caller is idle and nothing is in flight. */
  settle(maxRounds: number): boolean {
    for (let round = 0; round < maxRounds; round++) {
      for (const caller of this.callers) {
        if (caller.state === 'holding') {
          caller.state = 'idle';
          this.apply(caller.client, this.cores[caller.client]!.localRelease(caller.lid));
        }
      }
      this.check();
      while (this.messages.length > 0) {
        this.deliver(0, false, 0);
        this.check();
      }
      for (let i = this.server.pendingNotices().length; i > 0; i--) this.notify(i - 1);
      this.check();
      if (this.callers.every((c) => c.state === 'idle') && this.messages.length === 0) return true;
      if (this.messages.length === 0) {
        // Only a timer can move things on (a lost retry, an IOERR, a failed RPC).
        while (this.timers.length > 0) this.fireTimer(0);
      }
    }
    return false;
  }
}

t.test('three cores and the real server: mutual exclusion under faults, then everyone finishes (fast-check)', async (t) => {
  let totalGrants = 0;
  fc.assert(
    fc.property(
      fc.array(fc.record({ pick: fc.nat(99), arg: fc.nat(1000), arg2: fc.nat(1000) }), { minLength: 100, maxLength: 400 }),
      (steps: Step[]) => {
        const cluster = new MiniCluster(3, 3, ['1', '2']);
        for (const { pick, arg, arg2 } of steps) {
          if (pick < 30) cluster.callerStep(arg, arg2);
          else if (pick < 70 && cluster.messages.length > 0) cluster.deliver(arg % cluster.messages.length, true, arg2);
          else if (pick < 75 && cluster.messages.length > 0) cluster.loseRequest(arg % cluster.messages.length);
          else if (pick < 90) cluster.notify(arg);
          else cluster.fireTimer(arg);
          cluster.check();
        }
        if (!cluster.settle(200)) throw new Error('did not settle: some caller never got its lock');
        totalGrants += cluster.grants;
      },
    ),
    { numRuns: 300 },
  );
  t.ok(totalGrants > 1000, `callers were granted locks (${totalGrants})`);
});

/**
 * RsmChecker's rule for reassigned viewstamps (tester/sim/rsm-checkers.ts): a viewstamp that no
 * replica holds any more, and that no primary executed, may be stamped again with another request
 * or time; one that some other replica still holds, or that a primary executed, may not. Driven
 * with stand-in replicas that emit the node's events directly.
 */
import t from 'tap';
import type { RsmExecutedEvent, RsmNode, RsmStateInstalledEvent } from '../rsm/node.js';
import type { Viewstamp } from '../rsm/protocol.js';
import type { StateMachine } from '../rsm/state-machine.js';
import { RsmChecker } from '../tester/sim/rsm-checkers.js';

/** A replica as the checker sees it: its listeners, its last viewstamp and a state that is its request log. */
class StandIn {
  private executed: Array<(event: RsmExecutedEvent) => void> = [];
  private installed: Array<(event: RsmStateInstalledEvent) => void> = [];
  lastExecuted: Viewstamp = { vid: 0, seqno: 0 };
  state = '';

  readonly stateMachine = {
    marshalState: () => new TextEncoder().encode(this.state),
  } as unknown as StateMachine;

  readonly node = {
    get lastExecuted(): Viewstamp {
      return { vid: 0, seqno: 0 };
    },
    onExecuted: (listener: (event: RsmExecutedEvent) => void) => {
      this.executed.push(listener);
      return () => {};
    },
    onStateInstalled: (listener: (event: RsmStateInstalledEvent) => void) => {
      this.installed.push(listener);
      return () => {};
    },
    onBatchStamped: () => () => {},
  } as unknown as RsmNode;

  execute(vs: Viewstamp, request: string, role: 'primary' | 'backup' = 'backup'): void {
    this.state += `${vs.vid}.${vs.seqno}=${request};`;
    this.lastExecuted = vs;
    const event: RsmExecutedEvent = { vs, proc: 1, request: new TextEncoder().encode(request), result: { status: 0, reply: new Uint8Array(0) }, role };
    for (const listener of this.executed) listener(event);
  }

  /** A restart that restored `state` at `last` from storage. */
  restored(last: Viewstamp, state: string): void {
    this.state = state;
    this.lastExecuted = last;
    for (const listener of this.installed) listener({ last, from: 'storage', vid: 0 });
  }
}

/** Three replicas that executed 3.1 (committed by the primary a) and 3.2 on the backups b and c only. */
function setup(): { checker: RsmChecker; a: StandIn; b: StandIn; c: StandIn; restartAll: () => { a: StandIn; b: StandIn; c: StandIn } } {
  const checker = new RsmChecker(() => 0);
  const make = (id: string, incarnation: number): StandIn => {
    const replica = new StandIn();
    checker.attach(id, incarnation, replica.node, replica.stateMachine);
    return replica;
  };
  const a = make('a', 1);
  const b = make('b', 1);
  const c = make('c', 1);
  for (const r of [b, c]) r.execute({ vid: 3, seqno: 1 }, 'x1');
  a.execute({ vid: 3, seqno: 1 }, 'x1', 'primary');
  for (const r of [b, c]) r.execute({ vid: 3, seqno: 2 }, 'x2 at time 10');
  const restartAll = (): { a: StandIn; b: StandIn; c: StandIn } => {
    const fresh = { a: make('a', 2), b: make('b', 2), c: make('c', 2) };
    for (const r of Object.values(fresh)) r.restored({ vid: 3, seqno: 1 }, '3.1=x1;');
    return fresh;
  };
  return { checker, a, b, c, restartAll };
}

t.test('a viewstamp every holder lost in a crash may be stamped again (a retry with a new time)', async (t) => {
  const { checker, restartAll } = setup();
  const after = restartAll();
  for (const r of Object.values(after)) r.execute({ vid: 3, seqno: 2 }, 'x2 at time 25');
  t.same(checker.violations, [], 'no violation');
  t.equal(checker.reassigned, 1, 'counted as reassigned');
});

t.test('a viewstamp another replica still holds may not be stamped again with something else', async (t) => {
  const { checker, b } = setup();
  // Only c restarts (its 3.2 was not durable); b still holds 3.2.
  const c2 = new StandIn();
  checker.attach('c', 2, c2.node, c2.stateMachine);
  c2.restored({ vid: 3, seqno: 1 }, '3.1=x1;');
  c2.execute({ vid: 3, seqno: 2 }, 'another request');
  t.ok(checker.violations.some((v) => v.includes('executed another request at 3.2')), 'another request at 3.2 is a violation');
  t.ok(b.lastExecuted.seqno === 2);
});

t.test('a viewstamp a primary executed is never reassigned', async (t) => {
  const { checker, a, b, c } = setup();
  a.execute({ vid: 3, seqno: 2 }, 'x2 at time 10', 'primary');
  for (const r of [b, c]) r.execute({ vid: 3, seqno: 3 }, 'x3');
  a.execute({ vid: 3, seqno: 3 }, 'x3', 'primary');
  const checkerViolationsBefore = checker.violations.length;
  const fresh = new StandIn();
  checker.attach('a', 2, fresh.node, fresh.stateMachine);
  fresh.restored({ vid: 3, seqno: 1 }, '3.1=x1;');
  fresh.execute({ vid: 3, seqno: 2 }, 'something else');
  t.equal(checkerViolationsBefore, 0, checker.violations.join('; '));
  t.ok(checker.violations.some((v) => v.includes('another request at 3.2')), 'a committed viewstamp with another request is a violation');
});

/**
 * The replica status (rsm/replica-status.ts): the life the recovery loop drives is accepted step
 * by step, a stale step of an older view changes nothing, and every change the protocol does not
 * make is refused; under random events the view never goes back, stopped is for good, and normal
 * is reached only from the end of a synchronisation.
 */
import { AssertionError } from 'node:assert';
import fc from 'fast-check';
import t from 'tap';
import { advance, CREATED, describeStatus, statusVid, type ReplicaStatus, type StatusEvent } from '../rsm/replica-status.js';

const run = (events: readonly StatusEvent[], from: ReplicaStatus = CREATED): ReplicaStatus => events.reduce(advance, from);

t.test('a primary synchronises its view, serves, resyncs and moves to a newer view', async (t) => {
  let status = run([{ kind: 'start' }, { kind: 'commit', vid: 1, role: 'primary' }]);
  t.same(status, { kind: 'syncing', vid: 1, role: 'primary', phase: 'committed' });
  for (const phase of ['quiescing', 'collecting', 'adopting', 'serving', 'recording'] as const) {
    status = advance(status, { kind: 'enter', vid: 1, phase });
    t.equal(status.kind === 'syncing' && status.phase, phase);
  }
  status = advance(status, { kind: 'ready', vid: 1 });
  t.same(status, { kind: 'normal', vid: 1, role: 'primary' });
  status = advance(status, { kind: 'resync' });
  t.same(status, { kind: 'syncing', vid: 1, role: 'primary', phase: 'committed' });
  status = advance(status, { kind: 'commit', vid: 3, role: 'backup' });
  t.same(status, { kind: 'syncing', vid: 3, role: 'backup', phase: 'committed' });
  t.equal(describeStatus(status), 'syncing view 3 as backup, committed');
});

t.test('a backup pulls, reports, pulls again after a BUSY, and is ready; or resumes after a restart', async (t) => {
  const phases = (['quiescing', 'pulling', 'reporting', 'pulling', 'reporting'] as const).map((phase): StatusEvent => ({ kind: 'enter', vid: 2, phase }));
  const status = run([{ kind: 'start' }, { kind: 'commit', vid: 2, role: 'backup' }, ...phases, { kind: 'ready', vid: 2 }]);
  t.same(status, { kind: 'normal', vid: 2, role: 'backup' });
  const resumed = run([{ kind: 'start' }, { kind: 'commit', vid: 2, role: 'backup' }, { kind: 'enter', vid: 2, phase: 'resuming' }, { kind: 'ready', vid: 2 }]);
  t.same(resumed, { kind: 'normal', vid: 2, role: 'backup' });
});

t.test('a replica outside the committed view joins, then synchronises the view that admits it', async (t) => {
  const joining = run([{ kind: 'start' }, { kind: 'commit', vid: 4, role: undefined }]);
  t.same(joining, { kind: 'joining', vid: 4 });
  t.equal(statusVid(joining), 4);
  t.same(advance(joining, { kind: 'commit', vid: 5, role: 'backup' }), { kind: 'syncing', vid: 5, role: 'backup', phase: 'committed' });
  t.equal(statusVid(CREATED), undefined);
});

t.test('a step of an older view is stale and changes nothing', async (t) => {
  const status = run([{ kind: 'start' }, { kind: 'commit', vid: 1, role: 'primary' }, { kind: 'enter', vid: 1, phase: 'collecting' }, { kind: 'commit', vid: 2, role: 'primary' }]);
  t.equal(advance(status, { kind: 'enter', vid: 1, phase: 'serving' }), status, 'the old synchronisation cannot move the new one');
  const joining: ReplicaStatus = { kind: 'joining', vid: 3 };
  t.equal(advance(joining, { kind: 'enter', vid: 3, phase: 'pulling' }), joining, 'a joining replica has no phase to enter');
});

t.test('changes the protocol does not make are refused', async (t) => {
  const syncing = (role: 'primary' | 'backup', phase: string): ReplicaStatus => ({ kind: 'syncing', vid: 2, role, phase }) as ReplicaStatus;
  const refusals: Array<[string, ReplicaStatus, StatusEvent]> = [
    ['start twice', { kind: 'joining', vid: 0 }, { kind: 'start' }],
    ['a commit before start', CREATED, { kind: 'commit', vid: 1, role: 'primary' }],
    ['a commit of the same view', syncing('backup', 'pulling'), { kind: 'commit', vid: 2, role: 'backup' }],
    ['a commit of an older view', { kind: 'normal', vid: 2, role: 'primary' }, { kind: 'commit', vid: 1, role: 'primary' }],
    ['a primary ready before its record is durable', syncing('primary', 'serving'), { kind: 'ready', vid: 2 }],
    ['a primary ready without synchronising', syncing('primary', 'committed'), { kind: 'ready', vid: 2 }],
    ['a backup ready before the primary has its transfer', syncing('backup', 'pulling'), { kind: 'ready', vid: 2 }],
    ['ready for another view', syncing('backup', 'reporting'), { kind: 'ready', vid: 3 }],
    ['ready while joining', { kind: 'joining', vid: 2 }, { kind: 'ready', vid: 2 }],
    ['a primary entering a backup phase', syncing('primary', 'quiescing'), { kind: 'enter', vid: 2, phase: 'pulling' }],
    ['a backup entering a primary phase', syncing('backup', 'quiescing'), { kind: 'enter', vid: 2, phase: 'serving' }],
    ['entering committed', syncing('backup', 'quiescing'), { kind: 'enter', vid: 2, phase: 'committed' }],
    ['resync while synchronising', syncing('primary', 'serving'), { kind: 'resync' }],
    ['resync while joining', { kind: 'joining', vid: 2 }, { kind: 'resync' }],
    ['a commit after stop', { kind: 'stopped' }, { kind: 'commit', vid: 9, role: 'primary' }],
    ['start after stop', { kind: 'stopped' }, { kind: 'start' }],
  ];
  for (const [what, status, event] of refusals) t.throws(() => advance(status, event), AssertionError, what);
  t.same(advance({ kind: 'stopped' }, { kind: 'stop' }), { kind: 'stopped' }, 'stop is idempotent');
  t.same(advance(syncing('primary', 'adopting'), { kind: 'stop' }), { kind: 'stopped' }, 'stop from anywhere');
});

t.test('under random events: the view never goes back, stopped is final, normal only from the end of a synchronisation', async (t) => {
  const phase = fc.constantFrom('committed', 'resuming', 'quiescing', 'collecting', 'adopting', 'serving', 'recording', 'pulling', 'reporting' as const);
  // An event names a view relative to the status's own (mostly its own, sometimes an older or a
  // newer one), so that runs get through whole synchronisations and also try stale steps.
  const delta = fc.constantFrom(-1, 0, 0, 0, 1);
  type Template = { readonly kind: StatusEvent['kind']; readonly delta: number; readonly role: 'primary' | 'backup' | undefined; readonly phase: PhaseName };
  type PhaseName = Extract<StatusEvent, { kind: 'enter' }>['phase'];
  const template: fc.Arbitrary<Template> = fc.record({
    // A stop ends a run's interest (nothing moves after it): rare.
    kind: fc.oneof(
      { weight: 20, arbitrary: fc.constantFrom<StatusEvent['kind']>('start', 'commit', 'commit', 'enter', 'enter', 'enter', 'enter', 'ready', 'ready', 'resync') },
      { weight: 1, arbitrary: fc.constant<StatusEvent['kind']>('stop') },
    ),
    delta,
    role: fc.constantFrom('primary' as const, 'backup' as const, undefined),
    phase,
  });
  const eventOf = (t: Template, status: ReplicaStatus): StatusEvent => {
    const vid = Math.max(0, (statusVid(status) ?? 0) + t.delta);
    switch (t.kind) {
      case 'commit':
        return { kind: 'commit', vid: vid + 1, role: t.role };
      case 'enter':
        return { kind: 'enter', vid, phase: t.phase };
      case 'ready':
        return { kind: 'ready', vid };
      default:
        return { kind: t.kind } as StatusEvent;
    }
  };
  let normals = 0;
  fc.assert(
    fc.property(fc.array(template, { minLength: 20, maxLength: 80 }), (templates) => {
      let status: ReplicaStatus = advance(CREATED, { kind: 'start' });
      for (const tpl of templates) {
        const e = eventOf(tpl, status);
        let next: ReplicaStatus;
        try {
          next = advance(status, e);
        } catch (error) {
          if (!(error instanceof AssertionError)) throw error;
          continue; // refused: the status is unchanged
        }
        const before = statusVid(status);
        const after = statusVid(next);
        if (before !== undefined && after !== undefined && after < before) return false;
        if (status.kind === 'stopped' && next.kind !== 'stopped') return false;
        if (e.kind === 'enter' && e.vid !== before && next !== status) return false; // a stale step changed something
        if (next.kind === 'normal' && status.kind !== 'normal') {
          normals++;
          if (status.kind !== 'syncing' || status.vid !== next.vid || status.role !== next.role) return false;
          const end = status.role === 'primary' ? ['recording'] : ['reporting', 'resuming'];
          if (!end.includes(status.phase)) return false;
        }
        if (next.kind === 'syncing' && status.kind === 'syncing' && next.vid === status.vid && next.role !== status.role) return false;
        status = next;
      }
      return true;
    }),
    { numRuns: 2000 },
  );
  t.ok(normals > 0, `random runs reached normal ${normals} times`);
});

/**
 * Property test of the primary/backup lock service: random Lock/Unlock sequences from 1–4 clerks
 * on 1–5 names, with one fault of the primary at a random step (the test hook's kill or dying, or
 * a silent crash that clerks only notice by timeout), run in the deterministic simulator (lib/sim)
 * with the real protocol code and the lab's real timers (virtual time costs nothing).
 *
 * Checked: every call returns (one failure is tolerated), and the answers are linearizable: a
 * single lock table applying each request once, in an order consistent with real time, explains
 * every answer. A call in flight at the fault may take effect or not, but its answer must agree.
 * Linearizability is local, so each name is checked on its own.
 *
 * Runs: PB_PROPERTY_RUNS (default 500). A failure prints fast-check's seed and path; replay with
 * PB_PROPERTY_SEED=<seed> PB_PROPERTY_PATH=<path>.
 */
import fc from 'fast-check';
import t from 'tap';
import { sleep } from '../lib/clock.js';
import { countFromEnv } from '../lib/cli.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { SimNetwork, SimWorld } from '../lib/sim/index.js';
import { PrimaryBackupLockClerk, PrimaryBackupLockServer } from '../lockserver/pb/index.js';
import { dying, kill } from '../lockserver/pb/testing.js';

const PRIMARY = '127.0.0.1:7001';
const BACKUP = '127.0.0.1:7002';

interface Step {
  readonly op: 'lock' | 'unlock';
  readonly name: number;
  readonly thinkMs: number;
}

interface Case {
  readonly worldSeed: number;
  readonly names: number;
  readonly clerks: readonly (readonly Step[])[];
  readonly fault: { readonly kind: 'kill' | 'dying' | 'crash'; readonly atStep: number };
}

interface Done {
  readonly op: 'lock' | 'unlock';
  readonly name: string;
  readonly invoke: number;
  /** Infinity when the call never answered (then it may or may not have taken effect). */
  readonly response: number;
  readonly result: boolean | undefined;
}

const caseArbitrary: fc.Arbitrary<Case> = fc.integer({ min: 1, max: 5 }).chain((names) =>
  fc.record({
    worldSeed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    names: fc.constant(names),
    clerks: fc.array(
      fc.array(
        fc.record({ op: fc.constantFrom('lock' as const, 'unlock' as const), name: fc.integer({ min: 0, max: names - 1 }), thinkMs: fc.integer({ min: 0, max: 30 }) }),
        { minLength: 1, maxLength: 8 },
      ),
      { minLength: 1, maxLength: 4 },
    ),
    fault: fc.record({ kind: fc.constantFrom('kill' as const, 'dying' as const, 'crash' as const), atStep: fc.integer({ min: 0, max: 32 }) }),
  }),
);

async function runCase(c: Case): Promise<{ history: Done[]; errors: string[]; mismatches: number; switched: boolean }> {
  const world = new SimWorld(c.worldSeed);
  const net = new SimNetwork(world);
  net.setLinkFaults({ delayMinMs: 1, delayMaxMs: 5 }); // varied delays: clerks' requests interleave differently
  const server = async (owner: 'primary' | 'backup'): Promise<PrimaryBackupLockServer> =>
    PrimaryBackupLockServer.start(
      { network: net.forOwner(owner), clock: world.clockFor(owner), random: world.random.fork() },
      { primary: PRIMARY, backup: BACKUP, role: owner },
    );
  const primary = await server('primary');
  const backup = await server('backup');
  const history: Done[] = [];
  const errors: string[] = [];
  let step = 0;
  // Every case has its fault: at one of its steps (the draw is reduced to the number of steps).
  const faultStep = c.fault.atStep % c.clerks.reduce((sum, steps) => sum + steps.length, 0);
  let running = c.clerks.length;
  c.clerks.forEach((steps, i) => {
    const owner = `clerk${i}`;
    const clock = world.clockFor(owner);
    const rpc = new RpcEndpoint(net.forOwner(owner).connect(), clock, world.random.fork());
    const clerk = new PrimaryBackupLockClerk(PRIMARY, BACKUP, { rpc });
    void (async () => {
      for (const s of steps) {
        await sleep(clock, s.thinkMs);
        if (step++ === faultStep) {
          if (c.fault.kind === 'kill') kill(primary);
          else if (c.fault.kind === 'dying') dying(primary);
          else world.crash('primary');
        }
        const name = `n${s.name}`;
        const invoke = world.now();
        try {
          const result = s.op === 'lock' ? await clerk.lock(name) : await clerk.unlock(name);
          history.push({ op: s.op, name, invoke, response: world.now(), result });
        } catch (error) {
          errors.push(`clerk${i} ${s.op} ${name}: ${String(error)}`);
          history.push({ op: s.op, name, invoke, response: Infinity, result: undefined });
        }
      }
    })().finally(() => running--);
  });
  const finished = await world.runUntil(() => running === 0, 600_000);
  if (!finished) errors.push('clerks did not finish within 600 s of virtual time');
  return { history, errors, mismatches: backup.mismatches, switched: backup.mode === 'backup-took-over' };
}

/** Is there an order of `ops` (one name) consistent with real time that a lock table explains? */
export function linearizable(ops: readonly Done[]): boolean {
  const n = ops.length;
  const memo = new Set<string>();
  const search = (done: number, held: boolean): boolean => {
    let allAnswered = true;
    let earliestResponse = Infinity;
    for (let i = 0; i < n; i++) {
      if (done & (1 << i)) continue;
      if (ops[i]!.result !== undefined) allAnswered = false;
      earliestResponse = Math.min(earliestResponse, ops[i]!.response);
    }
    if (allAnswered) return true; // only unanswered calls left: they may never have taken effect
    const key = `${done}:${held}`;
    if (memo.has(key)) return false;
    memo.add(key);
    for (let i = 0; i < n; i++) {
      if (done & (1 << i)) continue;
      const op = ops[i]!;
      // It may go next only if no remaining call finished before it started.
      if (op.invoke > earliestResponse) continue;
      const answer = op.op === 'lock' ? !held : held;
      if (op.result !== undefined && op.result !== answer) continue;
      if (search(done | (1 << i), op.op === 'lock' ? true : false)) return true;
    }
    return false;
  };
  return search(0, false);
}

t.test('the checker itself rejects what no lock table explains', async (t) => {
  const at = (invoke: number, response: number, op: 'lock' | 'unlock', result: boolean | undefined): Done => ({ op, name: 'x', invoke, response, result });
  t.equal(linearizable([at(0, 1, 'lock', true), at(2, 3, 'lock', true)]), false, 'two Locks granted one after the other');
  t.equal(linearizable([at(0, 1, 'lock', true), at(2, 3, 'unlock', true), at(4, 5, 'lock', true)]), true);
  t.equal(linearizable([at(0, 1, 'unlock', true)]), false, 'Unlock of a lock never held');
  t.equal(linearizable([at(0, 10, 'lock', false), at(1, 2, 'lock', true)]), true, 'overlapping: the later-invoked call may go first');
  t.equal(linearizable([at(0, 10, 'lock', true), at(1, 2, 'lock', true)]), false, 'overlapping Locks cannot both be granted');
  t.equal(linearizable([at(0, Infinity, 'lock', undefined), at(5, 6, 'unlock', true)]), true, 'an unanswered Lock may have taken effect');
  t.equal(linearizable([at(0, Infinity, 'lock', undefined), at(5, 6, 'lock', true), at(7, 8, 'unlock', false)]), false);
});

t.test('answers are linearizable through one primary fault', async (t) => {
  const numRuns = countFromEnv('PB_PROPERTY_RUNS', 500);
  const seedText = process.env['PB_PROPERTY_SEED'];
  const path = process.env['PB_PROPERTY_PATH'];
  let faultsThatSwitched = 0;
  await fc.assert(
    fc.asyncProperty(caseArbitrary, async (c) => {
      const { history, errors, mismatches, switched } = await runCase(c);
      if (errors.length > 0) throw new Error(`calls failed: ${errors.join('; ')}`);
      if (mismatches !== 0) throw new Error(`the backup disagreed with ${mismatches} forwarded answers`);
      for (let name = 0; name < c.names; name++) {
        const ops = history.filter((d) => d.name === `n${name}`);
        if (!linearizable(ops)) throw new Error(`n${name}: no lock-table order explains ${JSON.stringify(ops)}`);
      }
      if (switched) faultsThatSwitched++;
    }),
    { numRuns, ...(seedText !== undefined ? { seed: Number(seedText) } : {}), ...(path !== undefined ? { path } : {}) },
  );
  t.ok(faultsThatSwitched > 0, `the backup took over in some runs (${faultsThatSwitched} of ${numRuns})`);
});

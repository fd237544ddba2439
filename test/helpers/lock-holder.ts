/**
 * A lock holder in a child process, for the session process tests: connects with a session of
 * `ttlMs`, acquires `name`, and prints one JSON line per event on stdout:
 * - {"event":"held","token":N}
 * - {"event":"write","token":N} every 100 ms while it runs (a careless writer that keeps using its
 *   token whatever happens: the fenced resource in the test must reject it once a newer one wrote)
 * - {"event":"lost","code":"LOCK_LOST","deadlineEpochMs":D,"atEpochMs":T} when lock.signal aborts;
 *   D is the session's local deadline on the wall clock (Date.now terms).
 * Usage: node lock-holder.js MEMBERS(comma-separated) TTL_MS NAME
 */
import { realClock } from '../../lib/clock.js';
import { connect } from '../../lockserver/locks.js';

const [membersArg, ttlArg, name] = process.argv.slice(2);
if (membersArg === undefined || ttlArg === undefined || name === undefined) {
  console.error('usage: lock-holder MEMBERS TTL_MS NAME');
  process.exit(2);
}
const say = (line: object): void => void process.stdout.write(`${JSON.stringify(line)}\n`);
const epochOf = (clockMs: number): number => Math.round(Date.now() - realClock.now() + clockMs);

const locks = await connect({ members: membersArg.split(','), session: { ttlMs: Number(ttlArg) } });
const lock = await locks.acquire(name, { timeoutMs: 30_000 });
say({ event: 'held', token: lock.token });
lock.signal.addEventListener('abort', () => {
  const reason = lock.signal.reason as { code?: string };
  say({ event: 'lost', code: reason.code, deadlineEpochMs: epochOf(locks.sessionKeeper?.localDeadline ?? 0), atEpochMs: Date.now() });
});
const writer = setInterval(() => say({ event: 'write', token: lock.token }), 100);
// Bounded: the test kills it long before this.
setTimeout(() => {
  clearInterval(writer);
  process.exit(0);
}, 60_000).unref();

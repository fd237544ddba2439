/**
 * Membership rules of the RSM that depend only on the view history: who is primary of a view, and
 * whom a node outside the view asks to be admitted.
 */
import { assert } from '../lib/assert.js';

/**
 * The primary of each view, computed from the view history alone:
 *   primary(1) = the only member of view 1;
 *   primary(v) = primary(v−1) if it is a member of view v, else the first member of view v−1, in
 *                member (join) order, that is a member of view v.
 * This is the lab's set_primary rule applied to every view in turn. Because it depends on the
 * history only, every node computes the same primary for a view, including a node that adopted
 * the history in one step when it joined (the lab's rule, applied to whatever primary such a node
 * happened to believe in, could differ).
 */
export class PrimaryTracker {
  /** primaries[v] for v = 1..; index 0 unused. A prefix of the one history, so never invalid. */
  private readonly primaries: string[] = [''];

  primaryOf(vid: number, membersOf: (vid: number) => readonly string[]): string {
    assert(Number.isSafeInteger(vid) && vid >= 1, `primaryOf: bad vid ${vid}`);
    for (let v = this.primaries.length; v <= vid; v++) {
      const members = membersOf(v);
      assert(members.length > 0, `primaryOf: view ${v} unknown`);
      let primary: string;
      if (v === 1) {
        primary = members[0]!;
      } else {
        const previous = this.primaries[v - 1]!;
        if (members.includes(previous)) {
          primary = previous;
        } else {
          const survivor = membersOf(v - 1).find((member) => members.includes(member));
          primary = survivor ?? members[0]!;
        }
      }
      assert(members.includes(primary), 'primary outside its view');
      this.primaries.push(primary);
    }
    return this.primaries[vid]!;
  }
}

/**
 * Whom to ask for admission, best first: the believed primary, the MASTER argument, then the
 * members of known views from the newest back (a stale node may still reach one who knows more).
 */
export function joinCandidates(
  me: string,
  primary: string,
  master: string,
  knownViews: ReadonlyArray<readonly string[]>,
): string[] {
  const candidates: string[] = [];
  const add = (node: string): void => {
    if (node !== me && node !== '' && !candidates.includes(node)) candidates.push(node);
  };
  add(primary);
  add(master);
  for (let i = knownViews.length - 1; i >= 0; i--) for (const member of knownViews[i]!) add(member);
  return candidates;
}

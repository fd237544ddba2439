/**
 * The part of a replica's position that every role core reads (rsm/replica-view.ts: isStopped,
 * inViewChange, primary, vidCommit), as getters over a test's mutable model, so a test moves the
 * replica by changing the model and the core reads the new values at its next event.
 */
export interface Standing {
  stopped: boolean;
  inViewChange: boolean;
  primary: string;
  vidCommit: number;
}

/** `base` with the standing getters over `model` added (copied as getters, never as values). */
export function withStanding<T extends object>(base: T, model: Standing): T & { readonly isStopped: boolean; readonly inViewChange: boolean; readonly primary: string; readonly vidCommit: number } {
  const standing = {
    get isStopped() {
      return model.stopped;
    },
    get inViewChange() {
      return model.inViewChange;
    },
    get primary() {
      return model.primary;
    },
    get vidCommit() {
      return model.vidCommit;
    },
  };
  return Object.defineProperties(base, Object.getOwnPropertyDescriptors(standing)) as T & typeof standing;
}

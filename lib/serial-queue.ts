/**
 * An async mutual-exclusion helper: tasks passed to `run` execute one at a time, in the order
 * they were queued, each to completion (including its awaits) before the next starts.
 *
 * It is deliberately not called a lock: this project is a lock service, and "lock" means a lock of
 * that service. The RSM primary runs the tasks that quiesce its pipeline through one (recovery
 * rounds, its transferreq answers, a view change's drain: the lab's invoke_mutex, now around the
 * pipeline). Storage writes are ordered by the replica itself (rsm/node.ts enqueueWrite), which
 * starts a write in the caller's turn when none runs; a queue task would start a microtask later.
 *
 * A task that throws rejects only its own `run` promise; the queue moves on to the next task.
 */
export class SerialQueue {
  private tail: Promise<void> = Promise.resolve();
  private queued = 0;

  /** Tasks queued or running. */
  get length(): number {
    return this.queued;
  }

  /** Runs `task` after every task queued before it has finished; resolves with its result. */
  run<T>(task: () => Promise<T> | T): Promise<T> {
    this.queued++;
    const result = this.tail.then(task);
    const settled = result.then(
      () => undefined,
      () => undefined,
    );
    this.tail = settled.then(() => {
      this.queued--;
    });
    return result;
  }

  /** Resolves once every task queued before this call has finished. */
  drain(): Promise<void> {
    return this.run(() => undefined);
  }
}

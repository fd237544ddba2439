/**
 * An opt-in CPU profile of a server process, for finding where its time goes under a benchmark.
 *
 * When the environment names a directory in VIEWSTAMP_CPU_PROFILE_DIR, the process samples its
 * own JavaScript stacks from startup (node's inspector, in this thread: no debugger port is
 * opened) and, when it stops, writes `<name>-<pid>.cpuprofile` there. Chrome DevTools
 * (Performance, "Load profile") and speedscope read that format. The variable is passed down to
 * child processes like any other, so
 *
 *     VIEWSTAMP_CPU_PROFILE_DIR=/tmp/prof npm run bench -- --only b
 *
 * profiles the three replicas of each cluster the benchmark starts. (`node --cpu-prof` would do
 * the same, but node refuses it in NODE_OPTIONS, and the testers start the servers themselves.)
 *
 * Only a process that stops cleanly (SIGTERM, SIGINT, its own exit) writes its profile; a
 * SIGKILLed one leaves nothing. Sampling slows a busy server (bench (b) at 32 clients: 1,640 ops/s
 * profiled against 2,010 without, one run each), so figures measured with profiling on are not
 * comparable with figures measured without.
 */
import fs from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';
import { logger } from './log.js';

const log = logger('cpu-profile');

export const CPU_PROFILE_DIR_VARIABLE = 'VIEWSTAMP_CPU_PROFILE_DIR';
/** Microseconds between samples (node's default for --cpu-prof): finer sampling slowed a replica by half. */
const SAMPLING_INTERVAL_US = 1000;

export interface CpuProfile {
  /** Stops sampling and writes the profile; the path written, or undefined (not profiling, or it failed). Idempotent. */
  stop(): string | undefined;
}

const NOT_PROFILING: CpuProfile = { stop: () => undefined };

/**
 * Starts profiling this process when `env` names a directory (see above); otherwise does nothing.
 * The profile is also written at process exit if `stop` was not called by then.
 */
export function startCpuProfileFromEnv(name: string, env: NodeJS.ProcessEnv = process.env): CpuProfile {
  const dir = env[CPU_PROFILE_DIR_VARIABLE];
  if (dir === undefined || dir === '') return NOT_PROFILING;
  const file = path.join(dir, `${name.replace(/[^A-Za-z0-9_.-]/g, '_')}-${process.pid}.cpuprofile`);
  const session = new Session();
  session.connect();
  // A session in this thread answers synchronously: each callback has run when post returns.
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: SAMPLING_INTERVAL_US });
  session.post('Profiler.start');
  let written: string | undefined;
  let stopped = false;
  const stop = (): string | undefined => {
    if (stopped) return written;
    stopped = true;
    process.off('exit', stop);
    session.post('Profiler.stop', (error, result) => {
      if (error !== null) {
        process.stderr.write(`cpu profile: not written (${error.message})\n`);
        return;
      }
      try {
        fs.mkdirSync(dir, { recursive: true });
        fs.writeFileSync(file, JSON.stringify(result.profile));
        written = file;
      } catch (cause) {
        process.stderr.write(`cpu profile: cannot write ${file} (${(cause as Error).message})\n`);
      }
    });
    session.disconnect();
    log('profile of %s: %s', name, written ?? 'not written');
    return written;
  };
  process.on('exit', stop);
  return { stop };
}

/**
 * The opt-in CPU profile (lib/cpu-profile.ts): lock_server started with VIEWSTAMP_CPU_PROFILE_DIR
 * writes a profile of itself when it stops on SIGTERM, one that names its own code; and
 * startCpuProfileFromEnv does nothing without a directory, and with one writes a readable profile
 * once, however often it is stopped.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { CPU_PROFILE_DIR_VARIABLE, startCpuProfileFromEnv } from '../lib/cpu-profile.js';
import { startChild, waitForOutput } from './helpers/child.js';
import { freeBasePort } from './helpers/ports.js';

const LOCK_SERVER = fileURLToPath(new URL('../lockserver/bin/lock_server.js', import.meta.url));

interface Profile {
  readonly nodes: ReadonlyArray<{ readonly callFrame: { readonly functionName: string; readonly url: string } }>;
  readonly samples: readonly number[];
}

async function readProfile(file: string): Promise<Profile> {
  return JSON.parse(await fsp.readFile(file, 'utf8')) as Profile;
}

async function tempDir(t: Test): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'viewstamp-cpu-profile-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

async function runServer(t: Test, env: Record<string, string>): Promise<void> {
  const port = await freeBasePort(1);
  const server = startChild(LOCK_SERVER, [String(port)], env);
  t.teardown(() => {
    if (server.process.exitCode === null && server.process.signalCode === null) server.process.kill('SIGKILL');
  });
  await waitForOutput(server, /serving caching locks on/, 20_000);
  server.process.kill('SIGTERM');
  t.equal(await server.exited(10_000), 0, 'stops cleanly on SIGTERM');
}

t.test('lock_server with VIEWSTAMP_CPU_PROFILE_DIR writes a profile of its own code when it stops', async (t) => {
  const dir = await tempDir(t);
  const profiles = path.join(dir, 'profiles'); // created by the server
  await runServer(t, { [CPU_PROFILE_DIR_VARIABLE]: profiles });
  const files = await fsp.readdir(profiles);
  t.equal(files.length, 1, 'one profile');
  t.match(files[0], /^lock_server-\d+-\d+\.cpuprofile$/);
  const profile = await readProfile(path.join(profiles, files[0]!));
  t.ok(profile.samples.length > 0, 'it holds samples');
  t.ok(
    profile.nodes.some((node) => node.callFrame.url.endsWith('/lockserver/bin/lock_server.js')),
    'its call tree names the program',
  );
});

t.test('startCpuProfileFromEnv: off unless a directory is named; stop writes once', async (t) => {
  t.equal(startCpuProfileFromEnv('off', {}).stop(), undefined, 'not profiling without the variable');
  t.equal(startCpuProfileFromEnv('off', { [CPU_PROFILE_DIR_VARIABLE]: '' }).stop(), undefined, 'nor with it empty');
  const dir = await tempDir(t);
  const profile = startCpuProfileFromEnv('unit/test', { [CPU_PROFILE_DIR_VARIABLE]: dir });
  const file = profile.stop();
  t.equal(file, path.join(dir, `unit_test-${process.pid}.cpuprofile`), 'the name is made safe for a file');
  t.equal(profile.stop(), file, 'a second stop changes nothing');
  t.same(await fsp.readdir(dir), [path.basename(file!)]);
  t.ok((await readProfile(file!)).nodes.length > 0);
});

/**
 * Helpers for the primary/backup lock service tests: a primary and a backup on free 127.0.0.1
 * ports in this process (real TCP), clerks that are closed with the pair.
 */
import net from 'node:net';
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { tcpNetwork } from '../../lib/tcp.js';
import { PrimaryBackupLockClerk, PrimaryBackupLockServer, type PbClerkOptions, type PbServerOptions } from '../../lockserver/pb/index.js';

/** A port that was free a moment ago (the OS hands out a fresh one each time). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface PbPair {
  readonly primaryAddress: string;
  readonly backupAddress: string;
  readonly primary: PrimaryBackupLockServer;
  readonly backup: PrimaryBackupLockServer;
  clerk(options?: Partial<PbClerkOptions>): PrimaryBackupLockClerk;
  close(): Promise<void>;
}

export async function startPair(options: Partial<PbServerOptions> = {}): Promise<PbPair> {
  const network = tcpNetwork();
  const primaryAddress = `127.0.0.1:${await freePort()}`;
  const backupAddress = `127.0.0.1:${await freePort()}`;
  const config = { primary: primaryAddress, backup: backupAddress };
  const env = { network, clock: realClock, random: osRandom() };
  const primary = await PrimaryBackupLockServer.start(env, { ...config, role: 'primary' }, options);
  const backup = await PrimaryBackupLockServer.start(env, { ...config, role: 'backup' }, options);
  const clerks: PrimaryBackupLockClerk[] = [];
  return {
    primaryAddress,
    backupAddress,
    primary,
    backup,
    clerk: (clerkOptions) => {
      const clerk = new PrimaryBackupLockClerk(primaryAddress, backupAddress, clerkOptions);
      clerks.push(clerk);
      return clerk;
    },
    close: async () => {
      await Promise.all(clerks.map((c) => c.close()));
      await Promise.all([primary.close(), backup.close()]);
    },
  };
}

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

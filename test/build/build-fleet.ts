/**
 * The fleet `firn build` tests run on: a loopback firn cache, hosts standing in for aarch64
 * boards (extra-platforms), each with a push token for the cache in its netrc, and an inventory
 * that makes them builders with `maxJobs` slots.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startFleet, type Fleet } from '../fleet/fleet.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

export interface BuildFleet {
  readonly server: TestServer;
  readonly fleet: Fleet;
  /** The inventory file (`firn.toml`) in `work`. */
  readonly inventory: string;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function startBuildFleet(options: {
  readonly boards: readonly string[];
  readonly maxJobs: number;
  /** Where the inventory is written. */
  readonly work: string;
}): Promise<BuildFleet> {
  const server = await startTestServer();
  let fleet: Fleet;
  try {
    fleet = await startFleet({
      hosts: options.boards.map((name) => ({ name, extraPlatforms: ['aarch64-linux'] })),
      cacheUrl: server.url,
      cachePublicKey: await server.publicKey(),
    });
  } catch (error) {
    await server[Symbol.asyncDispose]();
    throw error;
  }
  const started = fleet;
  const dispose = async (): Promise<void> => {
    // The server goes whatever the fleet's cleanup says: a live child would keep the test
    // process waiting until its timeout.
    try {
      await started[Symbol.asyncDispose]();
    } finally {
      await server[Symbol.asyncDispose]();
    }
  };
  try {
    const token = await server.token('push');
    for (const host of fleet.hosts) {
      writeFileSync(
        host.path('conf', 'netrc'),
        `machine ${fleet.gateway} login firn password ${token}\n`,
      );
    }
    const inventory = fleet.writeInventory(join(options.work, 'firn.toml'), {
      hosts: Object.fromEntries(
        options.boards.map((name) => [
          name,
          { systems: ['aarch64-linux'], 'max-jobs': options.maxJobs },
        ]),
      ),
    });
    return { server, fleet, inventory, [Symbol.asyncDispose]: dispose };
  } catch (error) {
    await dispose();
    throw error;
  }
}

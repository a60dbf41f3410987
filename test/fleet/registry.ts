/**
 * Who owns which fleet: each running fleet leaves `/run/firn-fleet/<id>.json` (its process and
 * temp dir) and a lock per /24 it uses, so two test processes never pick the same subnet and
 * `cleanupStale` removes only what a dead process left behind. `teardownFleet` is the one
 * cleanup, used by a fleet's dispose, by its exit handler and by `cleanupStale`: it finds
 * everything by the fleet's id (namespaces `firn-<id>-*`, the root link `firn-<id>`, mounts under
 * its temp dir), so it also works for a fleet that crashed half-way through starting.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ip,
  killNamespace,
  listNetns,
  mountPointsUnder,
  namespaceInode,
  netnsPath,
  processAlive,
  processStartTime,
  unmount,
} from './netns.ts';

const REGISTRY = '/run/firn-fleet';
const ID = '[0-9a-f]{6}';

interface Owner {
  readonly id: string;
  readonly pid: number;
  readonly startTime: string;
  readonly dir: string;
}

export function fleetDir(id: string): string {
  return join(tmpdir(), `firn-fleet-${id}`);
}

export function rootLinkName(id: string): string {
  return `firn-${id}`;
}

export function netnsName(id: string, host: string): string {
  return `firn-${id}-${host}`;
}

/** Records this process as the owner of fleet `id`, before anything of it exists. */
export function register(id: string): void {
  mkdirSync(REGISTRY, { recursive: true });
  const owner: Owner = {
    id,
    pid: process.pid,
    startTime: processStartTime(process.pid),
    dir: fleetDir(id),
  };
  writeFileSync(join(REGISTRY, `${id}.json`), JSON.stringify(owner), { flag: 'wx' });
}

function owner(id: string): Owner | undefined {
  try {
    return JSON.parse(readFileSync(join(REGISTRY, `${id}.json`), 'utf8')) as Owner;
  } catch {
    return undefined;
  }
}

export function isLive(id: string): boolean {
  const found = owner(id);
  return found !== undefined && processAlive(found.pid, found.startTime);
}

/** Claims 10.213.X.0/24 for fleet `id`; false if another live fleet holds it. */
export function claimSubnet(x: number, id: string): boolean {
  const lock = join(REGISTRY, `subnet-${x}`);
  try {
    writeFileSync(lock, id, { flag: 'wx' });
    return true;
  } catch {
    const holder = readFileSync(lock, 'utf8').trim();
    if (isLive(holder)) return false;
    rmSync(lock, { force: true });
    try {
      writeFileSync(lock, id, { flag: 'wx' });
      return true;
    } catch {
      return false;
    }
  }
}

/** Removes every namespace, process, mount, link, lock and file of fleet `id`; returns problems. */
export function teardownFleet(id: string): string[] {
  const problems: string[] = [];
  const attempt = (what: string, action: () => void): void => {
    try {
      action();
    } catch (error) {
      problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  const dir = owner(id)?.dir ?? fleetDir(id);
  const namespaces = listNetns().filter((name) => name.startsWith(`firn-${id}-`));
  for (const name of namespaces) {
    attempt(`kill processes in ${name}`, () => {
      killNamespace('net', namespaceInode(netnsPath(name)));
    });
  }
  const nsDir = join(dir, 'ns');
  const mounted = new Set(mountPointsUnder(dir));
  if (existsSync(nsDir)) {
    for (const file of readdirSync(nsDir)) {
      const path = join(nsDir, file);
      if (!mounted.has(path)) continue;
      attempt(`kill processes in mount namespace ${path}`, () => {
        killNamespace('mnt', namespaceInode(path));
      });
    }
  }
  for (const point of mountPointsUnder(dir)) {
    attempt(`unmount ${point}`, () => {
      unmount(point);
    });
  }
  for (const name of namespaces) {
    attempt(`delete netns ${name}`, () => ip(['netns', 'del', name]));
  }
  // Deleting the bridge namespace took the root link's veth peer, and so the link, with it.
  const link = rootLinkName(id);
  if (ip(['-o', 'link', 'show', 'dev', link], undefined, true) !== '') {
    attempt(`delete link ${link}`, () => ip(['link', 'del', link]));
  }
  attempt('release subnet', () => {
    releaseSubnets(id);
  });
  const left = mountPointsUnder(dir);
  if (left.length > 0) problems.push(`still mounted: ${left.join(', ')}`);
  else
    attempt(`remove ${dir}`, () => {
      rmSync(dir, { recursive: true, force: true });
    });
  rmSync(join(REGISTRY, `${id}.json`), { force: true });
  return problems;
}

function releaseSubnets(id: string): void {
  if (!existsSync(REGISTRY)) return;
  for (const file of readdirSync(REGISTRY)) {
    if (!file.startsWith('subnet-')) continue;
    const lock = join(REGISTRY, file);
    if (readFileSync(lock, 'utf8').trim() === id) rmSync(lock, { force: true });
  }
}

/**
 * Removes what earlier runs left behind when they crashed or were killed: every fleet id found
 * in a namespace name, a link, a mount, a temp dir or the registry whose owner is not alive.
 * Returns the ids it cleaned.
 */
export function cleanupStale(): string[] {
  const ids = new Set<string>();
  const collect = (text: string, pattern: RegExp): void => {
    for (const match of text.matchAll(pattern)) if (match[1] !== undefined) ids.add(match[1]);
  };
  collect(listNetns().join('\n'), new RegExp(`^firn-(${ID})-`, 'gm'));
  collect(ip(['-o', 'link', 'show'], undefined, true), new RegExp(`^\\d+: firn-(${ID})[@:]`, 'gm'));
  collect(
    readFileSync('/proc/self/mountinfo', 'utf8'),
    new RegExp(`/firn-fleet-(${ID})(?=[/ ])`, 'g'),
  );
  collect(readdirSync(tmpdir()).join('\n'), new RegExp(`^firn-fleet-(${ID})$`, 'gm'));
  if (existsSync(REGISTRY)) {
    for (const file of readdirSync(REGISTRY)) {
      collect(file, new RegExp(`^(${ID})\\.json$`, 'g'));
      if (file.startsWith('subnet-'))
        collect(readFileSync(join(REGISTRY, file), 'utf8'), new RegExp(`^(${ID})`, 'g'));
    }
  }
  const cleaned: string[] = [];
  for (const id of ids) {
    if (isLive(id)) continue;
    teardownFleet(id);
    cleaned.push(id);
  }
  return cleaned;
}

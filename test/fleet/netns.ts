/**
 * The Linux plumbing under the test fleet, kept synchronous so the same code can clean up from
 * an `exit` handler: `ip` commands, namespace inodes, finding and killing every process in a
 * namespace, and mounts under a directory. Nothing here touches an interface, address or mount
 * it was not handed by name.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';

/** Runs a program to completion; throws with its stderr unless `allowFail`. */
export function runSync(
  command: string,
  args: readonly string[],
  options: { readonly allowFail?: boolean; readonly input?: string } = {},
): { status: number; stdout: string; stderr: string } {
  const result = spawnSync(command, [...args], {
    encoding: 'utf8',
    input: options.input ?? '',
    timeout: 30_000,
  });
  if (result.error !== undefined) throw result.error;
  const status = result.status ?? -1;
  if (status !== 0 && options.allowFail !== true) {
    throw new Error(`${command} ${args.join(' ')} failed (${status}): ${result.stderr.trim()}`);
  }
  return { status, stdout: result.stdout, stderr: result.stderr };
}

/** `ip [-n NETNS] ARGS…` */
export function ip(args: readonly string[], netns?: string, allowFail = false): string {
  const full = netns === undefined ? [...args] : ['-n', netns, ...args];
  return runSync('ip', full, { allowFail }).stdout;
}

export function netnsPath(name: string): string {
  return `/run/netns/${name}`;
}

export function listNetns(): string[] {
  return existsSync('/run/netns') ? readdirSync('/run/netns') : [];
}

/** The inode that names a namespace, from a bind-mounted namespace file. */
export function namespaceInode(path: string): number {
  return statSync(path).ino;
}

/** Every process whose `kind` namespace is the one with this inode. */
export function pidsInNamespace(kind: 'net' | 'mnt', inode: number): number[] {
  const wanted = `${kind}:[${inode}]`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/ns/${kind}`) === wanted) pids.push(Number(entry));
    } catch {
      // The process exited while we looked, or is a zombie (no namespaces any more).
    }
  }
  return pids;
}

/** SIGKILLs every process in the namespace until none is left; throws after `timeoutMs`. */
export function killNamespace(kind: 'net' | 'mnt', inode: number, timeoutMs = 5000): void {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = pidsInNamespace(kind, inode);
    if (pids.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`processes ${pids.join(', ')} in ${kind}:[${inode}] survived SIGKILL`);
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    sleepSync(10);
  }
}

export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Mount points at or under `dir` in this mount namespace, deepest first. */
export function mountPointsUnder(dir: string): string[] {
  const points: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    const point = field.replace(/\\([0-7]{3})/g, (_, octal: string) =>
      String.fromCharCode(parseInt(octal, 8)),
    );
    if (point === dir || point.startsWith(`${dir}/`)) points.push(point);
  }
  return points.sort((a, b) => b.length - a.length);
}

/** Unmounts, lazily if a plain unmount is refused (a mount kept busy by a dying process). */
export function unmount(point: string): void {
  if (runSync('umount', [point], { allowFail: true }).status !== 0) {
    runSync('umount', ['--lazy', point], { allowFail: true });
  }
}

/** Is `pid` alive and the same process that started at `startTime` (field 22 of stat)? */
export function processAlive(pid: number, startTime: string): boolean {
  try {
    return processStartTime(pid) === startTime;
  } catch {
    return false;
  }
}

export function processStartTime(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[19] ?? '';
}

/**
 * The spool: a directory of small JSON files, one per `firn hook` call, that `firn drain`
 * empties. It needs no locks, so any number of builds may finish at once:
 *
 *   pending/<ms>-<pid>-<rand>.json    queued; written to `.tmp-…` in the same directory,
 *                                     fsynced, then renamed (atomic), then the directory fsynced
 *   claimed/<pid>-<start>/<name>      taken by the drain process with that pid and start time
 *                                     (rename, so two drains never take the same entry); a
 *                                     drain that died leaves them, and the next one moves them
 *                                     back to pending/
 *   failed/<name>, <name>.reason      entries that can never succeed (their paths are gone)
 *   tmp/<pid>-<start>/                a drain's temp files (large compressed NARs)
 *   hook.log                          what went wrong in the hook, one line each
 *
 * Only node:fs and node:path here: the hook imports this file.
 */
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { firnError } from '../errors.ts';

export interface SpoolEntry {
  readonly version: 1;
  /** Store paths the build produced; empty from Nix 2.8.0, whose OUT_PATHS is always empty. */
  readonly outPaths: readonly string[];
  /** The derivation built, whose log goes to the cache too. */
  readonly drvPath?: string | undefined;
  /** ISO time the hook ran. */
  readonly queuedAt: string;
}

export interface ClaimedEntry {
  readonly name: string;
  /** Where it is now (under claimed/). */
  readonly file: string;
  readonly entry: SpoolEntry;
}

export const spoolDirs = (spool: string) =>
  ({
    pending: join(spool, 'pending'),
    claimed: join(spool, 'claimed'),
    failed: join(spool, 'failed'),
    tmp: join(spool, 'tmp'),
    hookLog: join(spool, 'hook.log'),
  }) as const;

const ENTRY_NAME = /^\d+-\d+-[0-9a-z]+\.json$/;
const TEMP_PREFIX = '.tmp-';

/**
 * Adds an entry durably: once this returns, the entry survives a crash or power loss. Safe to
 * call from many processes at once. Throws FIRN_E_SPOOL, naming the spool and the cause.
 */
export function enqueue(spool: string, entry: SpoolEntry): string {
  const dir = spoolDirs(spool).pending;
  const name = `${String(Date.now()).padStart(14, '0')}-${process.pid}-${Math.random().toString(36).slice(2, 10) || '0'}.json`;
  const temp = join(dir, TEMP_PREFIX + name);
  try {
    ensureDir(dir);
    const fd = openSync(temp, 'wx', 0o644);
    try {
      writeSync(fd, JSON.stringify(entry) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, join(dir, name));
    fsyncDir(dir);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // never created, or already renamed
    }
    throw spoolError(error, spool, 'queue a build in');
  }
  return name;
}

/**
 * `mkdir -p`, one level at a time. Node's own recursive mkdirSync spins forever where the
 * kernel answers ENOENT for a directory whose parent exists (under /proc, for one), and a hook
 * that hangs would stop Nix's build loop.
 */
export function ensureDir(dir: string): void {
  const missing: string[] = [];
  for (let current = dir; ; current = dirname(current)) {
    try {
      mkdirSync(current);
      break;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') break;
      if (code !== 'ENOENT' || dirname(current) === current || missing.length > 64) throw error;
      missing.push(current);
    }
  }
  for (const path of missing.reverse()) {
    try {
      mkdirSync(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function spoolError(error: unknown, spool: string, action: string): Error {
  const reason = error instanceof Error ? error.message : String(error);
  return firnError('FIRN_E_SPOOL', `cannot ${action} the spool ${spool}: ${reason}`, {
    cause: error,
    hint: 'check that the spool directory is writable and its disk is not full (FIRN_SPOOL, --spool)',
  });
}

export function parseEntry(text: string): SpoolEntry {
  const value = JSON.parse(text) as Partial<SpoolEntry> | null;
  const outPaths = value?.outPaths;
  if (
    value?.version !== 1 ||
    !Array.isArray(outPaths) ||
    !outPaths.every((path) => typeof path === 'string' && path.startsWith('/')) ||
    (value.drvPath !== undefined && typeof value.drvPath !== 'string') ||
    (outPaths.length === 0 && value.drvPath === undefined)
  ) {
    throw new Error('not a version 1 spool entry with outPaths or a drvPath');
  }
  return {
    version: 1,
    outPaths,
    drvPath: value.drvPath,
    queuedAt: typeof value.queuedAt === 'string' ? value.queuedAt : '',
  };
}

/** Entries waiting, oldest first. */
export function pendingNames(spool: string): string[] {
  try {
    return readdirSync(spoolDirs(spool).pending)
      .filter((name) => ENTRY_NAME.test(name))
      .sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw spoolError(error, spool, 'read');
  }
}

/** This process as a claim owner: its pid and start time, so a reused pid is not mistaken. */
export function ownerId(pid = process.pid): string {
  return `${pid}-${processStartTime(pid) ?? 0}`;
}

function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime); the command name in field 2 may hold spaces, so count after ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export function ownerAlive(owner: string): boolean {
  const [pidText, start] = owner.split('-');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const now = processStartTime(pid);
  if (now !== undefined) return now === start;
  if (start !== '0') return false; // /proc works here and the process is gone
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes up to `limit` pending entries for `owner`, oldest first. An entry another drain took
 * first is skipped; one that cannot be parsed goes to failed/.
 */
export function claim(spool: string, owner: string, limit: number): ClaimedEntry[] {
  const dirs = spoolDirs(spool);
  const mine = join(dirs.claimed, owner);
  const claimed: ClaimedEntry[] = [];
  try {
    ensureDir(mine);
    for (const name of pendingNames(spool)) {
      if (claimed.length >= limit) break;
      const file = join(mine, name);
      try {
        renameSync(join(dirs.pending, name), file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // another drain
        throw error;
      }
      let entry: SpoolEntry;
      try {
        entry = parseEntry(readFileSync(file, 'utf8'));
      } catch (error) {
        fail(
          spool,
          { name, file, entry: { version: 1, outPaths: [], queuedAt: '' } },
          `unreadable entry: ${(error as Error).message}`,
        );
        continue;
      }
      claimed.push({ name, file, entry });
    }
  } catch (error) {
    throw spoolError(error, spool, 'claim entries in');
  }
  return claimed;
}

/** Gives entries back to pending/ (their upload did not finish). */
export function release(spool: string, entries: readonly ClaimedEntry[]): void {
  const { pending } = spoolDirs(spool);
  for (const { name, file } of entries) {
    try {
      renameSync(file, join(pending, name));
    } catch (error) {
      throw spoolError(error, spool, 'return an entry to');
    }
  }
}

/** Removes an entry whose paths the cache confirmed. */
export function complete(spool: string, entry: ClaimedEntry): void {
  try {
    unlinkSync(entry.file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      throw spoolError(error, spool, 'remove an entry from');
  }
}

/** Moves an entry that can never succeed to failed/, with the reason beside it. */
export function fail(spool: string, entry: ClaimedEntry, reason: string): void {
  const { failed } = spoolDirs(spool);
  try {
    ensureDir(failed);
    writeFileSync(join(failed, `${entry.name}.reason`), reason + '\n');
    renameSync(entry.file, join(failed, entry.name));
  } catch (error) {
    throw spoolError(error, spool, 'move a failed entry in');
  }
}

/**
 * Puts back what drains that died had claimed, and removes their temp files. Returns how many
 * entries came back.
 */
export function recoverStale(spool: string, self: string): number {
  const dirs = spoolDirs(spool);
  let recovered = 0;
  try {
    for (const owner of listDir(dirs.claimed)) {
      if (owner === self || ownerAlive(owner)) continue;
      const dir = join(dirs.claimed, owner);
      ensureDir(dirs.pending);
      for (const name of listDir(dir)) {
        renameSync(join(dir, name), join(dirs.pending, name));
        recovered++;
      }
      rmdirSync(dir);
    }
    for (const owner of listDir(dirs.tmp)) {
      if (owner !== self && !ownerAlive(owner))
        rmSync(join(dirs.tmp, owner), { recursive: true, force: true });
    }
  } catch (error) {
    throw spoolError(error, spool, 'recover entries in');
  }
  return recovered;
}

/** Removes temp files of hooks that died mid-write (older than `maxAgeMs`). */
export function removeTorn(spool: string, maxAgeMs: number, now = Date.now()): number {
  const { pending } = spoolDirs(spool);
  let removed = 0;
  for (const name of listDir(pending)) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    const file = join(pending, name);
    try {
      if (now - statSync(file).mtimeMs > maxAgeMs) {
        unlinkSync(file);
        removed++;
      }
    } catch {
      // gone already: its hook finished after all
    }
  }
  return removed;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/** Removes a drain's own claim and temp directories once it holds nothing there. */
export function leave(spool: string, owner: string): void {
  const dirs = spoolDirs(spool);
  try {
    rmdirSync(join(dirs.claimed, owner));
  } catch {
    // not empty (entries still claimed) or never made
  }
  rmSync(join(dirs.tmp, owner), { recursive: true, force: true });
}

/**
 * Garbage collection of the cache: evicts least recently used paths whole (narinfo row first,
 * then the NAR blob once no path uses it), never a path that a kept path references, so every
 * closure the cache serves stays complete. NARs that never got a narinfo are removed after a
 * grace period (an upload may be between its NAR and its narinfo).
 */
import type { BlobStore } from './blob-store.ts';
import type { CacheIndex, PathSummary } from './cache-index.ts';

export interface GcOptions {
  /** Evict until the stored NAR bytes are at most this. */
  readonly maxSize?: number | undefined;
  /** Evict paths not read (or uploaded) for this many milliseconds. */
  readonly olderThan?: number | undefined;
  readonly dryRun?: boolean;
  readonly now?: number;
  /** NARs without any narinfo older than this are removed (default one hour). */
  readonly orphanGraceMs?: number;
}

export interface GcReport {
  readonly evictedPaths: string[];
  readonly removedNars: number;
  readonly freedBytes: number;
  readonly remainingBytes: number;
  /** Paths that qualified but are referenced by kept paths. */
  readonly keptForReferrers: number;
}

export async function collectGarbage(
  index: CacheIndex,
  blobs: BlobStore,
  options: GcOptions,
): Promise<GcReport> {
  const now = options.now ?? Date.now();
  await index.flushTouches();
  const paths = await index.listPaths();
  const narSize = new Map((await index.listNars()).map((nar) => [nar.key, nar]));
  let remainingBytes = [...narSize.values()].reduce((sum, nar) => sum + nar.fileSize, 0);
  const referrerCount = await countReferrers(index, paths);
  const narUsers = new Map<string, number>();
  for (const path of paths) narUsers.set(path.narKey, (narUsers.get(path.narKey) ?? 0) + 1);

  const wanted = (path: PathSummary): boolean =>
    (options.olderThan !== undefined && path.lastAccess < now - options.olderThan) ||
    (options.maxSize !== undefined && remainingBytes > options.maxSize);

  const evicted: PathSummary[] = [];
  const gone = new Set<string>();
  let progress = true;
  // Evicting a path can free the paths it referenced, which may be older still: repeat passes.
  while (progress) {
    progress = false;
    for (const path of paths) {
      if (gone.has(path.hashPart) || (referrerCount.get(path.hashPart) ?? 0) > 0 || !wanted(path))
        continue;
      gone.add(path.hashPart);
      evicted.push(path);
      progress = true;
      for (const reference of await index.referencesOf(path.hashPart)) {
        if (reference !== path.hashPart)
          referrerCount.set(reference, (referrerCount.get(reference) ?? 1) - 1);
      }
      const users = (narUsers.get(path.narKey) ?? 1) - 1;
      narUsers.set(path.narKey, users);
      if (users === 0) remainingBytes -= narSize.get(path.narKey)?.fileSize ?? 0;
    }
  }
  const keptForReferrers = paths.filter((path) => !gone.has(path.hashPart) && wanted(path)).length;
  if (options.dryRun === true) {
    const freed = [...new Set(evicted.map((path) => path.narKey))].filter(
      (key) => narUsers.get(key) === 0,
    );
    const freedBytes = freed.reduce((sum, key) => sum + (narSize.get(key)?.fileSize ?? 0), 0);
    return {
      evictedPaths: evicted.map((p) => p.storePath),
      removedNars: freed.length,
      freedBytes,
      remainingBytes,
      keptForReferrers,
    };
  }

  // Rows go first, in one transaction: a narinfo is never served without its NAR.
  const orphaned = await index.deletePaths(evicted.map((path) => path.hashPart));
  const stale = (await index.listUnusedNars(now - (options.orphanGraceMs ?? 3_600_000))).filter(
    (key) => !orphaned.includes(key),
  );
  for (const key of stale) await index.deleteNar(key);
  let freedBytes = 0;
  for (const key of [...orphaned, ...stale]) {
    freedBytes += narSize.get(key)?.fileSize ?? 0;
    await blobs.delete(key);
  }
  for (const path of evicted) await blobs.delete(`ls/${path.hashPart}.ls`);
  return {
    evictedPaths: evicted.map((path) => path.storePath),
    removedNars: orphaned.length + stale.length,
    freedBytes,
    remainingBytes:
      remainingBytes - stale.reduce((sum, key) => sum + (narSize.get(key)?.fileSize ?? 0), 0),
    keptForReferrers,
  };
}

async function countReferrers(
  index: CacheIndex,
  paths: readonly PathSummary[],
): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const path of paths) {
    for (const reference of await index.referencesOf(path.hashPart)) {
      if (reference !== path.hashPart) counts.set(reference, (counts.get(reference) ?? 0) + 1);
    }
  }
  return counts;
}

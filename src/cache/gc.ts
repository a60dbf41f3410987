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
  // Oldest first among the paths no kept path references. Evicting a path can free the paths
  // it referenced, which may be older than anything evicted so far: they join the queue.
  const position = new Map(paths.map((path, i) => [path.hashPart, i]));
  const ready = new IndexHeap();
  for (const [i, path] of paths.entries()) {
    if ((referrerCount.get(path.hashPart) ?? 0) === 0) ready.push(i);
  }
  for (let i = ready.pop(); i !== undefined; i = ready.pop()) {
    const path = paths[i];
    // Every path still queued is newer and the cache fits: nothing more is wanted.
    if (path === undefined || !wanted(path)) break;
    gone.add(path.hashPart);
    evicted.push(path);
    for (const reference of await index.referencesOf(path.hashPart)) {
      if (reference === path.hashPart) continue;
      const left = (referrerCount.get(reference) ?? 1) - 1;
      referrerCount.set(reference, left);
      const at = position.get(reference);
      if (left === 0 && at !== undefined) ready.push(at);
    }
    const users = (narUsers.get(path.narKey) ?? 1) - 1;
    narUsers.set(path.narKey, users);
    if (users === 0) remainingBytes -= narSize.get(path.narKey)?.fileSize ?? 0;
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

  // Rows go first, in one transaction: a narinfo is never served without its NAR. The index
  // may keep some of the plan (a path uploaded meanwhile references them): the report and the
  // blobs follow what it really deleted.
  const { deleted, orphanedNars } = await index.deletePaths(evicted.map((path) => path.hashPart));
  const deletedSet = new Set(deleted);
  const removed = evicted.filter((path) => deletedSet.has(path.hashPart));
  const stale = (await index.listUnusedNars(now - (options.orphanGraceMs ?? 3_600_000))).filter(
    (key) => !orphanedNars.includes(key),
  );
  for (const key of stale) await index.deleteNar(key);
  const bytesOf = (keys: Iterable<string>): number => {
    let sum = 0;
    for (const key of keys) sum += narSize.get(key)?.fileSize ?? 0;
    return sum;
  };
  for (const key of [...orphanedNars, ...stale]) await blobs.delete(key);
  for (const path of removed) await blobs.delete(`ls/${path.hashPart}.ls`);
  // NARs the plan counted as freed that a kept path still uses stay in the remaining bytes.
  const planned = new Set(
    evicted.map((path) => path.narKey).filter((key) => narUsers.get(key) === 0),
  );
  const keptNars = [...planned].filter((key) => !orphanedNars.includes(key));
  return {
    evictedPaths: removed.map((path) => path.storePath),
    removedNars: orphanedNars.length + stale.length,
    freedBytes: bytesOf(orphanedNars) + bytesOf(stale),
    remainingBytes: remainingBytes + bytesOf(keptNars) - bytesOf(stale),
    keptForReferrers: keptForReferrers + evicted.length - removed.length,
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

/** A binary min-heap of indices into the LRU-ordered path list: smallest index is oldest. */
class IndexHeap {
  readonly #items: number[] = [];

  push(value: number): void {
    const items = this.#items;
    items.push(value);
    for (let i = items.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      const [up, down] = [items[i] ?? 0, items[parent] ?? 0];
      if (down <= up) break;
      items[i] = down;
      items[parent] = up;
      i = parent;
    }
  }

  pop(): number | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (items.length === 0 || last === undefined) return top;
    items[0] = last;
    for (let i = 0; ;) {
      const [left, right] = [2 * i + 1, 2 * i + 2];
      let smallest = i;
      if (left < items.length && (items[left] ?? 0) < (items[smallest] ?? 0)) smallest = left;
      if (right < items.length && (items[right] ?? 0) < (items[smallest] ?? 0)) smallest = right;
      if (smallest === i) break;
      [items[i], items[smallest]] = [items[smallest] ?? 0, items[i] ?? 0];
      i = smallest;
    }
    return top;
  }
}

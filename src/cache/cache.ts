/**
 * The cache as one object: blob store, index and signing key, opened from a data directory.
 * Opening also repairs what a crash can leave: temp files are removed, blobs the index does not
 * know are deleted (they were never committed) and index rows whose blob is gone are dropped.
 */
import { mkdir, stat } from 'node:fs/promises';
import { firnError } from '../errors.ts';
import { join } from 'node:path';
import type { BlobStore } from './blob-store.ts';
import type { CacheIndex } from './cache-index.ts';
import { FsBlobStore } from './fs-blob-store.ts';
import { loadOrCreateSigningKey } from './signing-key.ts';
import { SqliteIndex } from './sqlite-index.ts';
import type { SecretKey } from '../nix/signing.ts';

export interface CacheOptions {
  readonly dataDir: string;
  readonly keyName: string;
  readonly storeDir: string;
}

export interface Cache {
  readonly dataDir: string;
  readonly storeDir: string;
  readonly blobs: BlobStore;
  readonly index: CacheIndex;
  readonly signingKey: SecretKey;
  /** What opening found and fixed, for the start-up log. */
  readonly openReport: OpenReport;
  close(): Promise<void>;
}

export interface OpenReport {
  readonly keyCreated: boolean;
  readonly keyTightened: boolean;
  readonly tempFilesRemoved: number;
  readonly orphanBlobsRemoved: number;
  readonly danglingRowsRemoved: number;
}

export interface Storage {
  readonly blobs: BlobStore;
  readonly index: CacheIndex;
  close(): Promise<void>;
}

/**
 * Opens an existing cache's blobs and index for `firn cache gc|verify`, which may run beside
 * `firn serve`: no key is made and nothing is repaired (an upload in flight looks like debris).
 */
export async function openStorage(dataDir: string): Promise<Storage> {
  await requireCache(dataDir);
  const blobs = new FsBlobStore(join(dataDir, 'blobs'));
  await blobs.init();
  const index = new SqliteIndex(join(dataDir, 'index.sqlite'));
  return { blobs, index, close: () => index.close() };
}

/** An error unless `dataDir` holds a cache's index. */
async function requireCache(dataDir: string): Promise<void> {
  try {
    await stat(join(dataDir, 'index.sqlite'));
  } catch (error) {
    throw firnError('FIRN_E_FILE_NOT_FOUND', `there is no firn cache in ${dataDir}`, {
      cause: error,
      hint: 'pass the directory firn serve uses with --data (or FIRN_DATA)',
    });
  }
}

export interface OpenedIndex {
  readonly index: CacheIndex;
  /** No cache was there: the index was made now (a typo in --data shows up here). */
  readonly created: boolean;
}

/**
 * Opens only the index, for commands (tokens) that must not touch blobs or keys. With `create`
 * a missing cache gets its index (tokens may be made before the first `firn serve`); without,
 * a missing cache is an error.
 */
export async function openIndex(
  dataDir: string,
  options: { readonly create: boolean },
): Promise<OpenedIndex> {
  const file = join(dataDir, 'index.sqlite');
  const existed = await stat(file).then(
    () => true,
    () => false,
  );
  if (!existed && !options.create) await requireCache(dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o750 });
  return { index: new SqliteIndex(file), created: !existed };
}

export async function openCache(options: CacheOptions): Promise<Cache> {
  const { dataDir } = options;
  await mkdir(dataDir, { recursive: true, mode: 0o750 });
  const blobs = new FsBlobStore(join(dataDir, 'blobs'));
  await blobs.init();
  const index = new SqliteIndex(join(dataDir, 'index.sqlite'));
  try {
    const loaded = await loadOrCreateSigningKey(dataDir, options.keyName);
    const tempFilesRemoved = await blobs.cleanup();
    const { orphanBlobsRemoved, danglingRowsRemoved } = await reconcile(blobs, index);
    return {
      dataDir,
      storeDir: options.storeDir,
      blobs,
      index,
      signingKey: loaded.key,
      openReport: {
        keyCreated: loaded.created,
        keyTightened: loaded.tightened,
        tempFilesRemoved,
        orphanBlobsRemoved,
        danglingRowsRemoved,
      },
      close: () => index.close(),
    };
  } catch (error) {
    await index.close();
    throw error;
  }
}

/**
 * A NAR blob is renamed into place before its index row is written, so a crash in between
 * leaves a blob with no row: it was never announced, and is removed. A row without a blob means
 * someone deleted files by hand; the row and the paths using it go, so nothing points at nothing.
 */
async function reconcile(
  blobs: BlobStore,
  index: CacheIndex,
): Promise<{ orphanBlobsRemoved: number; danglingRowsRemoved: number }> {
  const rows = new Set((await index.listNars()).map((nar) => nar.key));
  let orphanBlobsRemoved = 0;
  const seen = new Set<string>();
  for await (const blob of blobs.list('nar/')) {
    seen.add(blob.key);
    if (!rows.has(blob.key)) {
      await blobs.delete(blob.key);
      orphanBlobsRemoved++;
    }
  }
  let danglingRowsRemoved = 0;
  for (const key of rows) {
    if (!seen.has(key)) {
      await index.deleteNar(key);
      danglingRowsRemoved++;
    }
  }
  return { orphanBlobsRemoved, danglingRowsRemoved };
}

/**
 * Where the cache keeps its bytes (NARs, listings, logs, realisations). Routes and the ingest
 * code see only this interface, so an S3-compatible store can stand in for the filesystem one.
 *
 * Keys are relative names such as `nar/<hash>.nar.zst`, built by firn from validated parts;
 * a store may still refuse a key that does not match its own rules.
 */
import type { Readable } from 'node:stream';

export interface BlobInfo {
  readonly size: number;
}

export interface BlobBody extends BlobInfo {
  /** The requested bytes: the whole blob, or `start..end` (inclusive) when a range was asked. */
  readonly body: Readable;
}

export interface ByteRange {
  readonly start: number;
  /** Inclusive. */
  readonly end: number;
}

/**
 * A blob opened for reading at offsets into buffers the caller owns, so a server can send many
 * GiB through a few reused buffers instead of a stream that allocates one per chunk.
 */
export interface BlobFile extends BlobInfo {
  /** Reads up to `length` bytes at `position` into `buffer`; 0 at the end of the blob. */
  read(buffer: Buffer, length: number, position: number): Promise<number>;
  close(): Promise<void>;
}

export interface PutOptions {
  readonly signal?: AbortSignal;
  /**
   * Runs once every byte is written (a store may make them durable meanwhile) and before the
   * blob becomes visible, which waits for both. Throwing here discards the upload: this is where
   * a caller checks hashes it computed while streaming.
   */
  readonly beforeCommit?: (info: BlobInfo) => Promise<void>;
  /** Replace an existing blob of that key (default: keep the existing one and report it). */
  readonly overwrite?: boolean;
}

export interface PutResult extends BlobInfo {
  /** False when a blob with this key already existed and was kept. */
  readonly created: boolean;
}

export interface BlobStore {
  head(key: string): Promise<BlobInfo | undefined>;
  get(
    key: string,
    options?: { readonly range?: ByteRange; readonly signal?: AbortSignal },
  ): Promise<BlobBody | undefined>;
  /** Optional: the blob as a {@link BlobFile}, for stores that hold real files. */
  openFile?(key: string): Promise<BlobFile | undefined>;
  /** Streams `source` into the store atomically: either the whole blob becomes visible or nothing. */
  put(
    key: string,
    source: Readable | AsyncIterable<Buffer> | Iterable<Buffer>,
    options?: PutOptions,
  ): Promise<PutResult>;
  delete(key: string): Promise<void>;
  /** Every blob under `prefix` (e.g. `nar/`), for verify, gc and start-up reconciliation. */
  list(prefix: string): AsyncIterable<{ readonly key: string; readonly size: number }>;
  /** Removes what an interrupted process left behind (temp files); returns how many. */
  cleanup(): Promise<number>;
}

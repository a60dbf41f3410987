/**
 * The default blob store: plain files under a directory, written crash-safely (temp file in the
 * same filesystem → fsync → rename), so a blob is either whole or absent after a crash at any
 * point. Temp files live in `tmp/` and are removed by `cleanup()` on start.
 */
import {
  closeSync,
  fsync as fsyncCallback,
  open as openCallback,
  write as writeCallback,
  writev as writevCallback,
} from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { addAbortSignal, type Readable } from 'node:stream';
import { promisify } from 'node:util';
import { threadId } from 'node:worker_threads';
import { firnError } from '../errors.ts';
import type {
  BlobBody,
  BlobFile,
  BlobInfo,
  BlobStore,
  ByteRange,
  PutOptions,
  PutResult,
} from './blob-store.ts';

const KEY = /^[a-z][a-z0-9-]*(?:\/[A-Za-z0-9+._=?!-]+)+$/;
let tempCounter = 0;

/** Chunks are gathered up to this size and written with one writev: one thread-pool trip each. */
const WRITE_BATCH = 512 * 1024;

const openAsync = promisify(openCallback);
const writevAsync = promisify(writevCallback);
const writeAsync = promisify(writeCallback);
const fsyncAsync = promisify(fsyncCallback);

/**
 * A temp file written in batches, so that a blob of a few kilobytes costs one open and one
 * write. Calls that may wait on the filesystem journal (open, write, fsync, rename) go to the
 * thread pool: done in place, an open measured 1–2 ms behind other uploads' fsyncs, with every
 * other request waiting. Only close, which never waits on the journal, is done in place.
 */
class TempFile {
  readonly #path: string;
  #fd: number | undefined;

  constructor(path: string) {
    this.#path = path;
  }

  async writeAll(
    source: Readable | AsyncIterable<Buffer> | Iterable<Buffer>,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    let size = 0;
    let batch: Buffer[] = [];
    let batchBytes = 0;
    // One write stays in flight while the next batch is read and hashed, so a large upload
    // keeps the disk and the CPU busy at once.
    let inFlight: Promise<void> | undefined;
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        signal?.throwIfAborted();
        size += chunk.length;
        batch.push(chunk);
        batchBytes += chunk.length;
        if (batchBytes >= WRITE_BATCH) {
          await inFlight;
          inFlight = this.#write(batch, batchBytes);
          // Observed at the next await; this keeps a failure meanwhile from being unhandled.
          inFlight.catch(() => undefined);
          batch = [];
          batchBytes = 0;
        }
      }
      signal?.throwIfAborted();
      await inFlight;
      await this.#write(batch, batchBytes);
      return size;
    } catch (error) {
      // The caller closes the file next: never under a write still running.
      await inFlight?.catch(() => undefined);
      throw error;
    }
  }

  async #write(buffers: Buffer[], bytes: number): Promise<void> {
    this.#fd ??= await openAsync(this.#path, 'wx', 0o644);
    if (bytes === 0) return;
    const { bytesWritten } = await writevAsync(this.#fd, buffers);
    // A short write (rare on files) is finished one call at a time.
    let rest = bytesWritten < bytes ? Buffer.concat(buffers).subarray(bytesWritten) : undefined;
    while (rest !== undefined && rest.length > 0) {
      const { bytesWritten: written } = await writeAsync(this.#fd, rest);
      rest = rest.subarray(written);
    }
  }

  async syncAndClose(): Promise<void> {
    const fd = this.#fd;
    if (fd === undefined) return;
    try {
      await fsyncAsync(fd);
    } finally {
      this.close();
    }
  }

  /** Closing a file whose pages are written is a quick call, done in place. */
  close(): void {
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) closeSync(fd);
  }
}

export class FsBlobStore implements BlobStore {
  readonly root: string;
  readonly #tmp: string;
  readonly #knownDirs = new Set<string>();

  constructor(root: string) {
    this.root = root;
    this.#tmp = join(root, 'tmp');
  }

  async init(): Promise<void> {
    await mkdir(this.#tmp, { recursive: true });
  }

  #path(key: string): string {
    // Keys are built by firn from validated names; this is the last line against traversal.
    if (!KEY.test(key) || key.split('/').some((part) => part === '.' || part === '..')) {
      throw firnError('FIRN_E_BAD_REQUEST', `invalid blob key '${key}'`);
    }
    return join(this.root, key);
  }

  async head(key: string): Promise<BlobInfo | undefined> {
    try {
      const info = await stat(this.#path(key));
      return info.isFile() ? { size: info.size } : undefined;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  /** The blob opened for reading, or undefined when there is none. */
  async #openForReading(key: string): Promise<FileHandle | undefined> {
    try {
      return await open(this.#path(key), 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async get(
    key: string,
    options: { range?: ByteRange; signal?: AbortSignal } = {},
  ): Promise<BlobBody | undefined> {
    const handle = await this.#openForReading(key);
    if (handle === undefined) return undefined;
    const { size } = await handle.stat();
    const range = options.range;
    // The stream owns the handle from here on and closes it when it ends or is destroyed.
    const body = handle.createReadStream({
      highWaterMark: 256 * 1024,
      ...(range === undefined ? {} : { start: range.start, end: range.end }),
    });
    if (options.signal !== undefined) addAbortSignal(options.signal, body);
    return { size, body };
  }

  async openFile(key: string): Promise<BlobFile | undefined> {
    const handle = await this.#openForReading(key);
    if (handle === undefined) return undefined;
    try {
      const { size } = await handle.stat();
      const opened = handle;
      return {
        size,
        read: async (buffer, length, position) =>
          (await opened.read(buffer, 0, length, position)).bytesRead,
        close: () => opened.close(),
      };
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  async put(
    key: string,
    source: AsyncIterable<Buffer> | Iterable<Buffer>,
    options: PutOptions = {},
  ): Promise<PutResult> {
    const target = this.#path(key);
    const temp = join(this.#tmp, `${process.pid}-${threadId}-${++tempCounter}.tmp`);
    const file = new TempFile(temp);
    try {
      let size: number;
      try {
        size = await file.writeAll(source, options.signal);
      } catch (error) {
        file.close();
        throw error;
      }
      // The fsync and the caller's check (often still waiting for a decompressor) overlap; the
      // rename waits for both.
      const [synced, checked] = await Promise.allSettled([
        file.syncAndClose(),
        options.beforeCommit?.({ size }),
      ]);
      if (checked.status === 'rejected') throw checked.reason;
      if (synced.status === 'rejected') throw synced.reason;
      if (options.overwrite !== true) {
        const existing = await this.head(key);
        if (existing !== undefined) {
          await unlink(temp);
          return { size: existing.size, created: false };
        }
      }
      await this.#ensureDir(target);
      // No fsync of the directory: if power fails before the rename is durable, the blob is
      // simply absent and start-up repair drops any index row that names it.
      await rename(temp, target);
      return { size, created: true };
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.#path(key), { force: true });
  }

  async *list(prefix: string): AsyncIterable<{ key: string; size: number }> {
    const dir = join(this.root, prefix);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const name of names) {
      const info = await stat(join(dir, name)).catch(() => undefined);
      if (info?.isFile() === true)
        yield { key: `${prefix.replace(/\/$/, '')}/${name}`, size: info.size };
    }
  }

  async cleanup(): Promise<number> {
    const names = await readdir(this.#tmp).catch(() => []);
    await Promise.all(names.map((name) => rm(join(this.#tmp, name), { force: true })));
    return names.length;
  }

  async #ensureDir(target: string): Promise<void> {
    const dir = join(target, '..');
    if (this.#knownDirs.has(dir)) return;
    await mkdir(dir, { recursive: true });
    this.#knownDirs.add(dir);
  }
}

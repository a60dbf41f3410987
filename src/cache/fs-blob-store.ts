/**
 * The default blob store: plain files under a directory, written crash-safely (temp file in the
 * same filesystem → fsync → rename), so a blob is either whole or absent after a crash at any
 * point. Temp files live in `tmp/` and are removed by `cleanup()` on start.
 */
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, addAbortSignal } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { threadId } from 'node:worker_threads';
import { firnError } from '../errors.ts';
import type {
  BlobBody,
  BlobInfo,
  BlobStore,
  ByteRange,
  PutOptions,
  PutResult,
} from './blob-store.ts';

const KEY = /^[a-z][a-z0-9-]*(?:\/[A-Za-z0-9+._=?!-]+)+$/;
let tempCounter = 0;

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

  async get(
    key: string,
    options: { range?: ByteRange; signal?: AbortSignal } = {},
  ): Promise<BlobBody | undefined> {
    let handle;
    try {
      handle = await open(this.#path(key), 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
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

  async put(
    key: string,
    source: AsyncIterable<Buffer> | Iterable<Buffer>,
    options: PutOptions = {},
  ): Promise<PutResult> {
    const target = this.#path(key);
    const temp = join(this.#tmp, `${process.pid}-${threadId}-${++tempCounter}.tmp`);
    try {
      const handle = await open(temp, 'wx', 0o644);
      let size = 0;
      try {
        await pipeline(
          Readable.from(source, { objectMode: false }),
          async (chunks: AsyncIterable<Buffer>) => {
            for await (const chunk of chunks) {
              size += chunk.length;
              await handle.write(chunk);
            }
          },
          options.signal === undefined ? {} : { signal: options.signal },
        );
        await handle.sync();
      } finally {
        await handle.close();
      }
      await options.beforeCommit?.({ size });
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

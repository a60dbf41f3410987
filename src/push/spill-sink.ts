/**
 * Where a compressed NAR waits between compression and upload: the bytes are hashed as they
 * arrive (the NAR's file name is their sha256), kept in memory while small, and moved to a temp
 * file once they pass a limit, so a 10 GiB NAR costs disk, not RAM, and a 2 KiB one costs no
 * file at all. A retried upload reads the same bytes again.
 */
import { createHash, randomBytes, type Hash as NodeHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { fromFsError } from '../errors.ts';

export class SpillSink extends Writable {
  readonly #hash: NodeHash = createHash('sha256');
  readonly #tmpDir: string;
  readonly #memoryLimit: number;
  #chunks: Buffer[] = [];
  #size = 0;
  #file: string | undefined;
  #handle: FileHandle | undefined;
  #digest: Buffer | undefined;

  constructor(tmpDir: string, memoryLimit: number) {
    super({ highWaterMark: 1 << 20 });
    this.#tmpDir = tmpDir;
    this.#memoryLimit = memoryLimit;
  }

  override _write(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    this.#hash.update(chunk);
    this.#size += chunk.length;
    if (this.#file === undefined && this.#size <= this.#memoryLimit) {
      // A copy: the writer may reuse its buffer once this write is done.
      this.#chunks.push(Buffer.from(chunk));
      callback();
      return;
    }
    this.#spill(chunk).then(() => {
      callback();
    }, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#digest = this.#hash.digest();
    const handle = this.#handle;
    this.#handle = undefined;
    if (handle === undefined) {
      callback();
      return;
    }
    handle.close().then(() => {
      callback();
    }, callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const handle = this.#handle;
    this.#handle = undefined;
    if (handle === undefined) {
      callback(error);
      return;
    }
    handle.close().then(
      () => {
        callback(error);
      },
      () => {
        callback(error);
      },
    );
  }

  async #spill(chunk: Buffer): Promise<void> {
    if (this.#handle === undefined) {
      const file = join(
        this.#tmpDir,
        `firn-nar-${process.pid}-${randomBytes(6).toString('hex')}.tmp`,
      );
      this.#file = file;
      try {
        this.#handle = await open(file, 'wx', 0o600);
        for (const held of this.#chunks) await this.#handle.write(held);
      } catch (error) {
        throw fromFsError(error, file, 'write temporary file');
      }
      this.#chunks = [];
    }
    await this.#handle.write(chunk);
  }

  /** sha256 of everything written; valid once the stream finished. */
  get digest(): Buffer {
    if (this.#digest === undefined) throw new Error('SpillSink.digest read before finish');
    return this.#digest;
  }

  get size(): number {
    return this.#size;
  }

  /** The bytes, again, for each attempt of an upload. */
  body(): Buffer | Readable {
    if (this.#file === undefined) {
      if (this.#chunks.length !== 1) this.#chunks = [Buffer.concat(this.#chunks)];
      return this.#chunks[0] ?? Buffer.alloc(0);
    }
    return createReadStream(this.#file, { highWaterMark: 1 << 20 });
  }

  /** Frees the memory or removes the temp file. */
  async dispose(): Promise<void> {
    this.#chunks = [];
    if (!this.destroyed) this.destroy();
    if (this.#file !== undefined) await rm(this.#file, { force: true });
  }
}

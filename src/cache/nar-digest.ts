/**
 * Measuring a stored NAR file as it streams: sha256 and size of the file as stored, and through a
 * decompressor, sha256 and size of the NAR inside. Used by uploads (to verify before committing)
 * and by `firn cache verify` (to find corruption later). The NAR is parsed on the way, so a
 * malformed one (bad padding, unsorted or hostile names, trailing bytes) is refused too.
 */
import { createHash, type Hash as Hasher } from 'node:crypto';
import type { Duplex, Readable } from 'node:stream';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { brotliDecompressSync, gunzipSync, zstdDecompressSync } from 'node:zlib';
import { FirnError, firnError } from '../errors.ts';
import { NarParser } from '../nix/nar-reader.ts';
import { createDecompressor, type Compression } from './compression.ts';
import { noteTransientBytes } from './gc-pacing.ts';

export interface NarFacts {
  readonly fileHash: Buffer;
  readonly fileSize: number;
  readonly narHash: Buffer;
  readonly narSize: number;
}

/** Compressed bodies up to this size are held in memory and decompressed in one call. */
const SMALL_BODY = 256 * 1024;
/**
 * One-call decompression stops at this output size (a small body may be a zip bomb, and several
 * uploads run at once); a NAR larger than this falls back to streaming.
 */
const ONE_CALL_LIMIT = 4 * 1024 * 1024;
/** Compressed bytes handed to a decompression stream at a time. */
const FEED_BATCH = 256 * 1024;

/** Undoes a compression in one call, or undefined where only a stream (or a program) can. */
const ONE_CALL: Partial<
  Record<Compression, (input: Buffer, options: { maxOutputLength: number }) => Buffer>
> = {
  zstd: zstdDecompressSync,
  gzip: gunzipSync,
  br: brotliDecompressSync,
};

/**
 * Hashes, sizes and parses NAR bytes. The NAR is parsed on the way: a cache must not sign bytes
 * that no Nix could unpack.
 */
class NarSink {
  readonly #parser = new NarParser();
  readonly #hasher: Hasher | undefined;
  size = 0;

  constructor(hash: boolean) {
    this.#hasher = hash ? createHash('sha256') : undefined;
  }

  push(chunk: Buffer): void {
    this.#hasher?.update(chunk);
    this.size += chunk.length;
    this.#parser.push(chunk);
  }

  end(): Buffer | undefined {
    this.#parser.end();
    return this.#hasher?.digest();
  }
}

/**
 * Hashes bytes as they pass and checks the NAR inside them. How depends on the compression:
 * - none: the bytes are the NAR, parsed as they pass; the file hash is the NAR hash.
 * - small zstd/gzip/br bodies (by the declared size): held, then decompressed in one call at the
 *   end, which costs a tenth of setting up a decompression stream for a few kilobytes.
 * - otherwise, a decompressor on a side branch, awaited with backpressure, so a slow
 *   decompressor slows the upload instead of buffering it in memory.
 */
export class NarDigest {
  readonly #compression: Compression;
  readonly #fileHasher: Hasher = createHash('sha256');
  readonly #maxBytes: number;
  readonly #sizeHint: number | undefined;
  #fileSize = 0;
  #fileHash: Buffer | undefined;
  /** Inline parsing (compression none). */
  readonly #inline: NarSink | undefined;
  /** Held compressed chunks (small bodies), until they are decompressed in one call. */
  #held: Buffer[] | undefined;
  #stream: { readonly decompressor: Duplex; readonly done: Promise<void> } | undefined;
  #narHash: Buffer | undefined;
  #narSize = 0;
  /** Compressed pieces gathered for the decompressor (streaming only). */
  #batch: Buffer[] = [];
  #batchBytes = 0;

  constructor(compression: Compression, maxBytes: number, sizeHint?: number) {
    this.#compression = compression;
    this.#maxBytes = maxBytes;
    this.#sizeHint = sizeHint;
    if (compression === 'none') this.#inline = new NarSink(false);
    else if (
      ONE_CALL[compression] !== undefined &&
      sizeHint !== undefined &&
      sizeHint <= SMALL_BODY
    )
      this.#held = [];
    else this.#startStream();
  }

  #startStream(): void {
    const decompressor = createDecompressor(this.#compression, this.#sizeHint);
    const sink = new NarSink(true);
    const writable = new Writable({
      highWaterMark: 1 << 20,
      write: (chunk: Buffer, _encoding, callback) => {
        try {
          sink.push(chunk);
        } catch (error) {
          callback(error as Error);
          return;
        }
        callback();
      },
      final: (callback) => {
        try {
          this.#narHash = sink.end();
          this.#narSize = sink.size;
        } catch (error) {
          callback(error as Error);
          return;
        }
        callback();
      },
    });
    const done = pipeline(decompressor, writable);
    // Observed in through() and result(); this keeps an early failure from being unhandled.
    done.catch(() => undefined);
    this.#stream = { decompressor, done };
  }

  get fileHash(): Buffer {
    if (this.#fileHash === undefined) throw new Error('NAR digest read before the upload ended');
    return this.#fileHash;
  }

  async *through(source: Readable | AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    let ended = false;
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        this.#fileSize += chunk.length;
        if (this.#fileSize > this.#maxBytes) throw narTooLarge(this.#maxBytes);
        this.#fileHasher.update(chunk);
        noteTransientBytes(chunk.length);
        if (this.#inline !== undefined) this.#parseInline(chunk);
        else if (this.#held !== undefined && this.#fileSize <= SMALL_BODY) this.#held.push(chunk);
        else await this.#feed(chunk);
        yield chunk;
      }
      this.#fileHash = this.#fileHasher.digest();
      if (this.#inline !== undefined) this.#endInline();
      else if (this.#held !== undefined) this.#decompressHeld();
      else {
        await this.#flushBatch();
        this.#stream?.decompressor.end();
      }
      ended = true;
    } finally {
      // Failed, or abandoned by the consumer: a decompressor (or its program) must not linger.
      if (!ended) this.#stream?.decompressor.destroy();
    }
  }

  #parseInline(chunk: Buffer): void {
    try {
      this.#inline?.push(chunk);
    } catch (error) {
      throw asCorrupt(error);
    }
  }

  #endInline(): void {
    try {
      this.#inline?.end();
    } catch (error) {
      throw asCorrupt(error);
    }
    this.#narHash = this.#fileHash;
    this.#narSize = this.#fileSize;
  }

  #decompressHeld(): void {
    const held = this.#held ?? [];
    const input = held.length === 1 ? (held[0] ?? Buffer.alloc(0)) : Buffer.concat(held);
    const decompress = ONE_CALL[this.#compression];
    if (decompress === undefined) throw new Error(`no one-call ${this.#compression} decompression`);
    let nar: Buffer;
    try {
      nar = decompress(input, { maxOutputLength: ONE_CALL_LIMIT });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ERR_BUFFER_TOO_LARGE') throw asCorrupt(error);
      // Larger inside than a one-call buffer should hold: stream it after all.
      this.#held = undefined;
      this.#startStream();
      this.#stream?.decompressor.end(input);
      return;
    }
    this.#held = undefined;
    const sink = new NarSink(true);
    try {
      sink.push(nar);
      this.#narHash = sink.end();
    } catch (error) {
      throw asCorrupt(error);
    }
    this.#narSize = sink.size;
  }

  /**
   * Socket reads arrive in 64 KiB pieces; each write to a decompressor is a thread-pool job, so
   * pieces are gathered to FEED_BATCH first (measured: 40% less CPU decompressing 256 MiB).
   */
  async #feed(chunk: Buffer): Promise<void> {
    if (this.#stream === undefined) {
      // A body larger than it said it would be: what was held goes to a stream from here on.
      this.#startStream();
      this.#batch.push(...(this.#held ?? []));
      this.#batchBytes += this.#fileSize - chunk.length;
      this.#held = undefined;
    }
    this.#batch.push(chunk);
    this.#batchBytes += chunk.length;
    if (this.#batchBytes >= FEED_BATCH) await this.#flushBatch();
  }

  async #flushBatch(): Promise<void> {
    if (this.#batchBytes === 0) return;
    const input =
      this.#batch.length === 1
        ? (this.#batch[0] ?? Buffer.alloc(0))
        : Buffer.concat(this.#batch, this.#batchBytes);
    this.#batch = [];
    this.#batchBytes = 0;
    await this.#write(input);
  }

  async #write(chunk: Buffer): Promise<void> {
    const stream = this.#stream;
    if (stream === undefined || stream.decompressor.write(chunk)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        stream.decompressor.off('drain', done);
        resolve();
      };
      stream.decompressor.on('drain', done);
      stream.done.then(
        () => {
          resolve();
        },
        (error: unknown) => {
          stream.decompressor.off('drain', done);
          reject(asCorrupt(error));
        },
      );
    });
  }

  async result(): Promise<NarFacts> {
    if (this.#stream !== undefined) {
      try {
        await this.#stream.done;
      } catch (error) {
        throw asCorrupt(error);
      }
    }
    if (this.#narHash === undefined) throw new Error('NAR digest read before the upload ended');
    return {
      fileHash: this.fileHash,
      fileSize: this.#fileSize,
      narHash: this.#narHash,
      narSize: this.#narSize,
    };
  }
}

export function narTooLarge(maxBytes: number): Error {
  return firnError('FIRN_E_INPUT_TOO_LARGE', `NAR upload exceeds the limit of ${maxBytes} bytes`, {
    hint: 'raise max-nar-size in the cache configuration if this is expected',
  });
}

function asCorrupt(error: unknown): Error {
  if (FirnError.is(error) && error.code.startsWith('FIRN_E_NAR_')) {
    return firnError(error.code, `the uploaded NAR is not a valid NAR: ${error.message}`, {
      cause: error,
      details: error.details,
      hint: 'produce NARs with nix-store --dump, nix copy or firn nar pack',
    });
  }
  if (FirnError.is(error) && error.code !== 'FIRN_E_SUBPROCESS') return error;
  const reason = error instanceof Error ? error.message : String(error);
  return firnError('FIRN_E_UPLOAD_HASH_MISMATCH', `the NAR upload does not decompress: ${reason}`, {
    cause: error,
    hint: 'the file extension must match its compression (.nar.zst is zstd, .nar.xz is xz, .nar is uncompressed)',
  });
}

/** Reads `body` to the end and measures it. */
export async function measureNarFile(body: Readable, compression: Compression): Promise<NarFacts> {
  const digest = new NarDigest(compression, Number.MAX_SAFE_INTEGER);
  for await (const _chunk of digest.through(body)) {
    // Consuming the generator is what drives the hashing.
  }
  return digest.result();
}

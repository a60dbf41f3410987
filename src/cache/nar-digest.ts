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
import { FirnError, firnError } from '../errors.ts';
import { NarParser } from '../nix/nar-reader.ts';
import { createDecompressor, type Compression } from './compression.ts';

export interface NarFacts {
  readonly fileHash: Buffer;
  readonly fileSize: number;
  readonly narHash: Buffer;
  readonly narSize: number;
}

/**
 * Hashes bytes as they pass and, on a side branch, decompresses and hashes the NAR inside them.
 * The side branch is awaited with backpressure, so a slow decompressor slows the upload instead
 * of buffering it in memory.
 */
export class NarDigest {
  readonly #fileHasher: Hasher = createHash('sha256');
  readonly #narHasher: Hasher = createHash('sha256');
  readonly #decompressor: Duplex;
  readonly #narDone: Promise<void>;
  readonly #maxBytes: number;
  #fileSize = 0;
  #narSize = 0;
  #fileHash: Buffer | undefined;

  constructor(compression: Compression, maxBytes: number, sizeHint?: number) {
    this.#maxBytes = maxBytes;
    this.#decompressor = createDecompressor(compression, sizeHint);
    // The NAR is also parsed: a cache must not sign bytes that no Nix could unpack.
    const parser = new NarParser();
    const sink = new Writable({
      highWaterMark: 1 << 20,
      write: (chunk: Buffer, _encoding, callback) => {
        this.#narHasher.update(chunk);
        this.#narSize += chunk.length;
        try {
          parser.push(chunk);
        } catch (error) {
          callback(error as Error);
          return;
        }
        callback();
      },
      final: (callback) => {
        try {
          parser.end();
        } catch (error) {
          callback(error as Error);
          return;
        }
        callback();
      },
    });
    this.#narDone = pipeline(this.#decompressor, sink);
    // Observed in through() and result(); this keeps an early failure from being unhandled.
    this.#narDone.catch(() => undefined);
  }

  get fileHash(): Buffer {
    if (this.#fileHash === undefined) throw new Error('NAR digest read before the upload ended');
    return this.#fileHash;
  }

  async *through(source: Readable | AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        this.#fileSize += chunk.length;
        if (this.#fileSize > this.#maxBytes) {
          throw firnError(
            'FIRN_E_INPUT_TOO_LARGE',
            `NAR upload exceeds the limit of ${this.#maxBytes} bytes`,
            {
              hint: 'raise max-nar-size in the cache configuration if this is expected',
            },
          );
        }
        this.#fileHasher.update(chunk);
        await this.#feed(chunk);
        yield chunk;
      }
      this.#fileHash = this.#fileHasher.digest();
      this.#decompressor.end();
    } catch (error) {
      this.#decompressor.destroy();
      throw error;
    }
  }

  async #feed(chunk: Buffer): Promise<void> {
    if (this.#decompressor.write(chunk)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        this.#decompressor.off('drain', done);
        resolve();
      };
      this.#decompressor.on('drain', done);
      this.#narDone.then(resolve, (error: unknown) => {
        this.#decompressor.off('drain', done);
        reject(asCorrupt(error));
      });
    });
  }

  async result(): Promise<NarFacts> {
    try {
      await this.#narDone;
    } catch (error) {
      throw asCorrupt(error);
    }
    return {
      fileHash: this.fileHash,
      fileSize: this.#fileSize,
      narHash: this.#narHasher.digest(),
      narSize: this.#narSize,
    };
  }
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

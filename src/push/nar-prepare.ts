/**
 * Getting one path's NAR ready to upload: packed by our writer straight from the store and, by
 * default, compressed with zstd. Three ways, by size and content:
 * - small NARs (most paths of a closure): one buffer, one compression call, both hashes;
 * - large compressible NARs: streamed through zstd into a spill sink that hashes the file (the
 *   NAR hash is the database's, checked by the cache);
 * - large NARs that zstd cannot shrink (media, archives, random data) and every large NAR when
 *   compression is off: sent as they are, streamed from the store at upload time. Their file
 *   hash is the NAR hash the Nix database records, so nothing is hashed, compressed or buffered
 *   here; the cache hashes the bytes against that name and refuses a path that changed.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { promisify } from 'node:util';
import { constants as zlib, createZstdCompress, zstdCompress } from 'node:zlib';
import { firnError } from '../errors.ts';
import { formatHash, hashesEqual, type Hash } from '../nix/hash.ts';
import { ChunkPool, narChunks } from '../nix/nar-writer.ts';
import { encodeNix32 } from '../nix/nix-base32.ts';
import type { PathInfo } from './path-info.ts';
import { SpillSink } from './spill-sink.ts';

export type PushCompression = 'zstd' | 'none';

export interface NarOptions {
  readonly compression: PushCompression;
  /** zstd level, 1–19. */
  readonly level: number;
  /**
   * NARs smaller than this go up uncompressed: zstd saves a few hundred bytes on them, and the
   * cache would spend more on a decompressor per upload than the bytes are worth.
   */
  readonly minCompressSize?: number;
  /** Told how many NAR bytes were packed, as they are (for progress bars). */
  readonly onProgress?: ((narBytes: number) => void) | undefined;
  readonly tmpDir: string;
  /** Compressed NARs up to this size stay in memory; larger ones go to a temp file. */
  readonly memoryLimit?: number;
}

export interface PreparedNar {
  /** e.g. `1qsv…hng9.nar.zst` */
  readonly fileName: string;
  readonly compression: PushCompression;
  readonly fileHash: Hash;
  readonly fileSize: number;
  readonly narHash: Hash;
  readonly narSize: number;
  /**
   * False when the bytes are streamed from the store unhashed (their hash is the database's):
   * a hash mismatch reported by the cache then means the store path changed.
   */
  readonly hashedHere: boolean;
  /** Small enough to travel in a batch with others (firn's `POST /api/v1/paths`). */
  readonly small: boolean;
  body(): Buffer | Readable;
  dispose(): Promise<void>;
}

const zstdCompressAsync = promisify(zstdCompress);

const DEFAULT_MEMORY_LIMIT = 8 * 1024 * 1024;
/** node:zlib's 16 KiB default output chunk makes zstd ~3.5× slower. */
const ZSTD_CHUNK = 1 << 20;
/** Small NARs, most paths of a closure, skip the streams: one buffer, one compression call. */
const SMALL_NAR = 1024 * 1024;
/** How much of a large NAR is compressed to decide whether compressing it is worth it. */
const SAMPLE_BYTES = 1024 * 1024;
/**
 * zstd output above this share of its input: not worth the CPU on both ends (the cache would
 * also decompress it to verify) for a few percent of the bytes.
 */
const INCOMPRESSIBLE = 0.95;

/**
 * Packs the path at `physical` (its files on this machine). What this side hashes is checked
 * against what the Nix database says, so a damaged store path is refused here rather than by
 * the cache; what it streams unhashed, the cache checks.
 */
export async function prepareNar(
  info: PathInfo,
  physical: string,
  options: NarOptions,
): Promise<PreparedNar> {
  if (info.narSize <= SMALL_NAR) return prepareSmallNar(info, physical, options);
  if (options.compression === 'none' || !(await compressible(physical, options.level))) {
    return streamedNar(info, physical, options);
  }
  return compressedNar(info, physical, options);
}

/** Whether zstd shrinks the first MiB of the NAR by more than a few percent. */
async function compressible(physical: string, level: number): Promise<boolean> {
  const copies: Buffer[] = [];
  let size = 0;
  for (const chunk of narChunks(physical, { pool: SMALL_POOL })) {
    copies.push(Buffer.from(chunk));
    SMALL_POOL.release(chunk);
    size += chunk.length;
    if (size >= SAMPLE_BYTES) break;
  }
  const sample = Buffer.concat(copies, size);
  const packed = await zstdCompressAsync(sample, {
    params: { [zlib.ZSTD_c_compressionLevel]: level },
  });
  return packed.length < sample.length * INCOMPRESSIBLE;
}

/** Sent as it is: named by the database's NAR hash, read from the store at upload time. */
function streamedNar(info: PathInfo, physical: string, options: NarOptions): PreparedNar {
  return {
    fileName: fileNameOf(info.narHash, 'none'),
    compression: 'none',
    fileHash: info.narHash,
    fileSize: info.narSize,
    narHash: info.narHash,
    narSize: info.narSize,
    hashedHere: false,
    small: false,
    body: () => Readable.from(countedChunks(info, physical, options.onProgress)),
    dispose: () => Promise.resolve(),
  };
}

/**
 * The NAR's chunks, each a fresh buffer (the socket may hold on to it), failing when the NAR
 * is not the size the database says: the cache was promised that many bytes.
 */
function* countedChunks(
  info: PathInfo,
  physical: string,
  onProgress: ((narBytes: number) => void) | undefined,
): Generator<Buffer> {
  let size = 0;
  for (const chunk of narChunks(physical)) {
    size += chunk.length;
    if (size > info.narSize) throw changedPath(info, undefined, size);
    onProgress?.(chunk.length);
    yield chunk;
  }
  if (size !== info.narSize) throw changedPath(info, undefined, size);
}

/**
 * Streamed through zstd into a spill sink, which hashes the compressed bytes for the file name.
 * The NAR itself is not hashed here: the cache measures it and refuses a narinfo whose NarHash
 * (the database's) differs; a NAR of the wrong size is caught here.
 */
async function compressedNar(
  info: PathInfo,
  physical: string,
  options: NarOptions,
): Promise<PreparedNar> {
  const sink = new SpillSink(options.tmpDir, options.memoryLimit ?? DEFAULT_MEMORY_LIMIT);
  const compressor = createZstdCompress({
    chunkSize: ZSTD_CHUNK,
    params: { [zlib.ZSTD_c_compressionLevel]: options.level },
  });
  const finished = pipeline(compressor, sink);
  const input: Writable = compressor;
  let narSize = 0;
  try {
    const pool = new ChunkPool();
    for (const chunk of narChunks(physical, { pool })) {
      narSize += chunk.length;
      if (narSize > info.narSize) throw changedPath(info, undefined, narSize);
      options.onProgress?.(chunk.length);
      const more = input.write(chunk, () => {
        pool.release(chunk);
      });
      if (!more) await once(input, 'drain');
      // Give compression a turn so the pool's buffers come back instead of piling up.
      else if (!pool.hasFree) await nextTurn();
    }
    input.end();
    await finished;
  } catch (error) {
    input.destroy();
    await sink.dispose();
    throw error;
  }
  if (narSize !== info.narSize) {
    await sink.dispose();
    throw changedPath(info, undefined, narSize);
  }
  const fileHash: Hash = { algorithm: 'sha256', digest: sink.digest };
  return {
    fileName: fileNameOf(fileHash, 'zstd'),
    compression: 'zstd',
    fileHash,
    fileSize: sink.size,
    narHash: info.narHash,
    narSize,
    hashedHere: false,
    small: false,
    body: () => sink.body(),
    dispose: () => sink.dispose(),
  };
}

/** Shared by every small NAR and sample: each is copied out of it before anything else runs. */
const SMALL_POOL = new ChunkPool();

async function prepareSmallNar(
  info: PathInfo,
  physical: string,
  options: NarOptions,
): Promise<PreparedNar> {
  const copies: Buffer[] = [];
  for (const chunk of narChunks(physical, { pool: SMALL_POOL })) {
    copies.push(Buffer.from(chunk));
    SMALL_POOL.release(chunk);
  }
  const bytes = copies.length === 1 ? (copies[0] ?? Buffer.alloc(0)) : Buffer.concat(copies);
  options.onProgress?.(bytes.length);
  const nar: Hash = { algorithm: 'sha256', digest: createHash('sha256').update(bytes).digest() };
  if (!hashesEqual(nar, info.narHash) || bytes.length !== info.narSize) {
    throw changedPath(info, nar, bytes.length);
  }
  const compression: PushCompression =
    bytes.length < (options.minCompressSize ?? 0) ? 'none' : options.compression;
  const file =
    compression === 'zstd'
      ? await zstdCompressAsync(bytes, {
          params: { [zlib.ZSTD_c_compressionLevel]: options.level },
        })
      : bytes;
  const fileHash: Hash =
    compression === 'none'
      ? nar
      : { algorithm: 'sha256', digest: createHash('sha256').update(file).digest() };
  return {
    fileName: fileNameOf(fileHash, compression),
    compression,
    fileHash,
    fileSize: file.length,
    narHash: nar,
    narSize: bytes.length,
    hashedHere: true,
    small: true,
    body: () => file,
    dispose: () => Promise.resolve(),
  };
}

function fileNameOf(fileHash: Hash, compression: PushCompression): string {
  return `${encodeNix32(fileHash.digest)}${compression === 'zstd' ? '.nar.zst' : '.nar'}`;
}

/**
 * `nar` undefined: not hashed here; then either the size differs or `cacheSaid` (the cache's
 * refusal of the bytes' hash) tells what was measured.
 */
export function changedPath(
  info: PathInfo,
  nar: Hash | undefined,
  narSize: number,
  cacheSaid?: Error,
): Error {
  const measured =
    cacheSaid !== undefined
      ? `a different hash (the cache said: ${cacheSaid.message})`
      : nar === undefined
        ? `${narSize} bytes`
        : `${narSize} bytes with ${formatHash(nar)}`;
  return firnError(
    'FIRN_E_UPLOAD_HASH_MISMATCH',
    `${info.path} is not what the Nix database recorded: its NAR has ${measured}; the database says ${info.narSize} bytes with ${formatHash(info.narHash)}`,
    {
      ...(cacheSaid === undefined ? {} : { cause: cacheSaid }),
      hint: `the store path was changed or damaged; check it with 'nix-store --verify-path ${info.path}' and repair it with 'nix-store --repair-path'`,
    },
  );
}

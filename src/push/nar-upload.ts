/**
 * One path's upload: its NAR made by our writer straight from the store, compressed with zstd
 * while both the NAR and the compressed bytes are hashed, then `PUT /nar/<filehash>.nar.zst`
 * with a Content-Length; its narinfo is a separate step (`uploadNarInfo`), made only once the
 * narinfos of its references are in the cache.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { promisify } from 'node:util';
import { constants as zlib, createZstdCompress, zstdCompress } from 'node:zlib';
import { firnError } from '../errors.ts';
import { formatHash, hashesEqual, type Hash } from '../nix/hash.ts';
import { ChunkPool, narChunks } from '../nix/nar-writer.ts';
import { serializeNarInfo, type NarInfo } from '../nix/narinfo.ts';
import { encodeNix32 } from '../nix/nix-base32.ts';
import type { CacheClient } from './cache-client.ts';
import { baseNameOf, hashPartOf } from './closure.ts';
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
  body(): Buffer | Readable;
  dispose(): Promise<void>;
}

const zstdCompressAsync = promisify(zstdCompress);

const DEFAULT_MEMORY_LIMIT = 8 * 1024 * 1024;
/** node:zlib's 16 KiB default output chunk makes zstd ~3.5× slower. */
const ZSTD_CHUNK = 1 << 20;

/**
 * Packs the path at `physical` (its files on this machine) and checks the result against what
 * the Nix database says, so a damaged store path is refused here rather than by the cache.
 */
export async function prepareNar(
  info: PathInfo,
  physical: string,
  options: NarOptions,
): Promise<PreparedNar> {
  if (info.narSize <= SMALL_NAR) return prepareSmallNar(info, physical, options);
  const sink = new SpillSink(options.tmpDir, options.memoryLimit ?? DEFAULT_MEMORY_LIMIT);
  const compressor =
    options.compression === 'zstd'
      ? createZstdCompress({
          chunkSize: ZSTD_CHUNK,
          params: { [zlib.ZSTD_c_compressionLevel]: options.level },
        })
      : undefined;
  const finished = compressor === undefined ? once(sink, 'finish') : pipeline(compressor, sink);
  const input: Writable = compressor ?? sink;
  const narHash = createHash('sha256');
  let narSize = 0;
  try {
    const pool = new ChunkPool();
    for (const chunk of narChunks(physical, { pool })) {
      narHash.update(chunk);
      narSize += chunk.length;
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
  const nar: Hash = { algorithm: 'sha256', digest: narHash.digest() };
  if (!hashesEqual(nar, info.narHash) || narSize !== info.narSize) {
    await sink.dispose();
    throw changedPath(info, nar, narSize);
  }
  const fileHash: Hash = { algorithm: 'sha256', digest: sink.digest };
  return {
    fileName: fileNameOf(fileHash, options.compression),
    compression: options.compression,
    fileHash,
    fileSize: sink.size,
    narHash: nar,
    narSize,
    body: () => sink.body(),
    dispose: () => sink.dispose(),
  };
}

/** Small NARs, most paths of a closure, skip the streams: one buffer, one compression call. */
const SMALL_NAR = 1024 * 1024;
/** Shared by every small NAR: each is copied out of it before anything else runs. */
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
  const fileHash: Hash = {
    algorithm: 'sha256',
    digest: createHash('sha256').update(file).digest(),
  };
  return {
    fileName: fileNameOf(fileHash, compression),
    compression,
    fileHash,
    fileSize: file.length,
    narHash: nar,
    narSize: bytes.length,
    body: () => file,
    dispose: () => Promise.resolve(),
  };
}

function fileNameOf(fileHash: Hash, compression: PushCompression): string {
  return `${encodeNix32(fileHash.digest)}${compression === 'zstd' ? '.nar.zst' : '.nar'}`;
}

function changedPath(info: PathInfo, nar: Hash, narSize: number): Error {
  return firnError(
    'FIRN_E_UPLOAD_HASH_MISMATCH',
    `${info.path} is not what the Nix database recorded: its NAR is ${narSize} bytes with ${formatHash(nar)}, the database says ${info.narSize} bytes with ${formatHash(info.narHash)}`,
    {
      hint: `the store path was changed or damaged; check it with 'nix-store --verify-path ${info.path}' and repair it with 'nix-store --repair-path'`,
    },
  );
}

/**
 * PUTs the NAR. With `checkFirst`, asks with a HEAD whether the cache already holds it (after
 * an interrupted run the NAR may be there without its narinfo). Returns whether bytes were sent.
 */
export async function uploadNar(
  client: CacheClient,
  nar: PreparedNar,
  options: { checkFirst: boolean; signal?: AbortSignal | undefined },
): Promise<boolean> {
  const path = `nar/${nar.fileName}`;
  if (options.checkFirst) {
    const head = await client.request({ method: 'HEAD', path, signal: options.signal });
    if (head.status === 200) return false;
  }
  await client.expect(
    {
      method: 'PUT',
      path,
      headers: { 'content-type': 'application/x-nix-nar', 'content-length': nar.fileSize },
      body: () => nar.body(),
      signal: options.signal,
    },
    [200, 201],
  );
  return true;
}

/** The narinfo a client uploads for `info` stored as `nar`, in Nix's own field order. */
export function narInfoText(info: PathInfo, nar: PreparedNar): string {
  const narInfo: NarInfo = {
    storePath: info.path,
    url: `nar/${nar.fileName}`,
    compression: nar.compression,
    fileHash: nar.fileHash,
    fileSize: nar.fileSize,
    narHash: nar.narHash,
    narSize: nar.narSize,
    references: info.references.map(baseNameOf).sort(),
    ...(info.deriver === undefined ? {} : { deriver: baseNameOf(info.deriver) }),
    sigs: info.sigs,
    ...(info.ca === undefined ? {} : { ca: info.ca }),
  };
  return serializeNarInfo(narInfo);
}

export async function uploadNarInfo(
  client: CacheClient,
  info: PathInfo,
  nar: PreparedNar,
  signal?: AbortSignal,
): Promise<void> {
  const text = Buffer.from(narInfoText(info, nar));
  await client.expect(
    {
      method: 'PUT',
      path: `${hashPartOf(info.path)}.narinfo`,
      headers: { 'content-type': 'text/x-nix-narinfo', 'content-length': text.length },
      body: () => text,
      signal,
    },
    [200, 201],
  );
}

/**
 * NAR compressions the cache accepts and how to undo them while streaming. The name in a
 * narinfo's `Compression:` and the NAR file's extension must agree.
 */
import type { Duplex } from 'node:stream';
import { PassThrough } from 'node:stream';
import { createBrotliDecompress, createGunzip, createZstdDecompress } from 'node:zlib';
import { spawnFilter } from '../process/filter.ts';

export const COMPRESSIONS = ['none', 'xz', 'zstd', 'bzip2', 'gzip', 'br'] as const;
export type Compression = (typeof COMPRESSIONS)[number];

const EXTENSION: Readonly<Record<Compression, string>> = {
  none: '.nar',
  xz: '.nar.xz',
  zstd: '.nar.zst',
  bzip2: '.nar.bz2',
  gzip: '.nar.gz',
  br: '.nar.br',
};

export function isCompression(name: string): name is Compression {
  return (COMPRESSIONS as readonly string[]).includes(name);
}

export function narExtension(compression: Compression): string {
  return EXTENSION[compression];
}

/** `abc.nar.zst` → { stem: 'abc', compression: 'zstd' }; undefined for anything else. */
export function splitNarFileName(
  fileName: string,
): { stem: string; compression: Compression } | undefined {
  for (const compression of COMPRESSIONS) {
    const extension = EXTENSION[compression];
    if (fileName.endsWith(extension)) {
      return { stem: fileName.slice(0, -extension.length), compression };
    }
  }
  return undefined;
}

const CHUNK = 256 * 1024; // node:zlib's 16 KiB default is ~3.5x slower for zstd; 1 MiB costs RSS for nothing
const SMALL_CHUNK = 64 * 1024;

/**
 * `sizeHint` is the compressed size when known: most store paths are small, and a 1 MiB output
 * buffer per upload would cost more to allocate than the whole decompression.
 */
export function createDecompressor(compression: Compression, sizeHint = Infinity): Duplex {
  const chunkSize = sizeHint < SMALL_CHUNK ? SMALL_CHUNK : CHUNK;
  switch (compression) {
    case 'none':
      return new PassThrough({ highWaterMark: chunkSize });
    case 'zstd':
      return createZstdDecompress({ chunkSize });
    case 'gzip':
      return createGunzip({ chunkSize });
    case 'br':
      return createBrotliDecompress({ chunkSize });
    case 'xz':
      return spawnFilter('xz', ['-dc', '-T1']);
    case 'bzip2':
      return spawnFilter('bzip2', ['-dc']);
  }
}

/**
 * Accepting a NAR upload: the body streams to a temp blob while it is hashed as sent (FileHash,
 * FileSize) and, through a decompressor, as a NAR (NarHash, NarSize). The blob becomes visible
 * only if its sha256 equals the hash in its file name; the NAR facts are recorded in the index
 * so that a later narinfo can be checked against them without reading the blob again.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { firnError } from '../errors.ts';
import { formatHash } from '../nix/hash.ts';
import { decodeNix32, nix32Length } from '../nix/nix-base32.ts';
import type { BlobStore } from './blob-store.ts';
import type { CacheIndex, NarRecord } from './cache-index.ts';
import { splitNarFileName, type Compression } from './compression.ts';
import { NarDigest, narTooLarge, type NarFacts } from './nar-digest.ts';

export interface NarIngestDeps {
  readonly blobs: BlobStore;
  readonly index: CacheIndex;
}

export interface NarUpload {
  /** The file name from the URL, e.g. `1qsv…hng9.nar.zst`. */
  readonly fileName: string;
  readonly body: Readable | AsyncIterable<Buffer>;
  readonly signal?: AbortSignal;
  /** Largest compressed size accepted. */
  readonly maxBytes?: number;
  /** The declared body size (Content-Length), when the client sent one. */
  readonly sizeHint?: number | undefined;
}

export interface NarIngestResult {
  readonly record: NarRecord;
  readonly created: boolean;
}

/** Parses and checks a NAR file name; the blob key is `nar/<file name>`. */
export function parseNarFileName(fileName: string): {
  fileHash: Buffer;
  compression: Compression;
  key: string;
} {
  const split = splitNarFileName(fileName);
  if (split?.stem.length !== nix32Length(32)) {
    throw firnError('FIRN_E_BAD_REQUEST', `'${fileName}' is not a NAR file name`, {
      hint: 'NAR files are named nar/<sha256 of the file in nix-base32>.nar[.xz|.zst|.bz2|.gz|.br]',
    });
  }
  let fileHash: Buffer;
  try {
    fileHash = decodeNix32(split.stem, 32);
  } catch (error) {
    throw firnError(
      'FIRN_E_BAD_REQUEST',
      `'${fileName}' is not a NAR file name: ${(error as Error).message}`,
    );
  }
  return { fileHash, compression: split.compression, key: `nar/${fileName}` };
}

export async function ingestNar(deps: NarIngestDeps, upload: NarUpload): Promise<NarIngestResult> {
  const { fileHash, compression, key } = parseNarFileName(upload.fileName);
  const maxBytes = upload.maxBytes ?? Number.MAX_SAFE_INTEGER;
  const stored = await deps.index.getNar(key);
  // One stat makes sure the row's blob is really there (gc may be removing both).
  if (stored !== undefined && (await deps.blobs.head(key)) !== undefined) {
    // Stored and verified before: bytes that hash to its name are the same bytes, so they are
    // only hashed (the name is the contract), not decompressed, parsed or written again.
    const sent = await hashBody(upload.body, maxBytes);
    if (!sent.equals(fileHash)) throw hashMismatch(upload.fileName, sent);
    return { record: stored, created: false };
  }
  const digest = new NarDigest(compression, maxBytes, upload.sizeHint);
  let facts: NarFacts | undefined;
  await deps.blobs.put(key, digest.through(upload.body), {
    ...(upload.signal === undefined ? {} : { signal: upload.signal }),
    // Same name, same bytes: a blob another upload put there meanwhile is simply replaced.
    overwrite: true,
    beforeCommit: async () => {
      facts = await digest.result();
      if (!digest.fileHash.equals(fileHash)) throw hashMismatch(upload.fileName, digest.fileHash);
    },
  });
  if (facts === undefined) throw new Error('NAR digest finished without facts');
  const record: NarRecord = {
    key,
    compression,
    fileHash: formatHash({ algorithm: 'sha256', digest: fileHash }),
    fileSize: facts.fileSize,
    narHash: formatHash({ algorithm: 'sha256', digest: facts.narHash }),
    narSize: facts.narSize,
    createdAt: Date.now(),
  };
  if (await deps.index.putNar(record)) return { record, created: true };
  // Another upload of the same NAR committed first; its record is the one kept.
  const first = await deps.index.getNar(key);
  if (first === undefined) throw new Error(`NAR ${key} vanished during commit`);
  return { record: first, created: false };
}

async function hashBody(body: Readable | AsyncIterable<Buffer>, maxBytes: number): Promise<Buffer> {
  const hasher = createHash('sha256');
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw narTooLarge(maxBytes);
    hasher.update(chunk);
  }
  return hasher.digest();
}

function hashMismatch(fileName: string, digest: Buffer): Error {
  return firnError(
    'FIRN_E_UPLOAD_HASH_MISMATCH',
    `NAR upload ${fileName} hashes to ${formatHash({ algorithm: 'sha256', digest })}, not to the hash in its name`,
    {
      hint: 'the upload was corrupted in transit, or the client named the file wrongly; upload it again',
    },
  );
}

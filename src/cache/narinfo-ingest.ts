/**
 * Accepting a narinfo upload. The cache never signs a hash it did not check: the narinfo must
 * name a NAR the cache holds, and its FileHash/FileSize/NarHash/NarSize must equal what the cache
 * measured when that NAR streamed in. By default every reference must already be in the cache,
 * so anything the cache serves can be substituted as a whole closure. Then the narinfo is signed
 * with the cache's key and committed with its references in one transaction.
 */
import { firnError } from '../errors.ts';
import { formatHash, hashesEqual, parseHash } from '../nix/hash.ts';
import { parseNarInfo, serializeNarInfo, type NarInfo } from '../nix/narinfo.ts';
import { withSignature, type SecretKey } from '../nix/signing.ts';
import { parseStorePath, parseStorePathBase } from '../nix/store-path.ts';
import type { CacheIndex, NarRecord, PathRecord } from './cache-index.ts';
import { parseNarFileName } from './nar-ingest.ts';

export interface NarInfoIngestDeps {
  readonly index: CacheIndex;
  readonly signingKey: SecretKey;
  readonly storeDir: string;
  readonly requireReferences: boolean;
}

export interface NarInfoUpload {
  /** The hash part from the URL (`/<hashPart>.narinfo`). */
  readonly hashPart: string;
  readonly text: string;
  readonly uploadedBy?: string | undefined;
}

export interface NarInfoIngestResult {
  readonly created: boolean;
  readonly storePath: string;
}

export async function ingestNarInfo(
  deps: NarInfoIngestDeps,
  upload: NarInfoUpload,
): Promise<NarInfoIngestResult> {
  const info = parseNarInfo(upload.text, { storeDir: deps.storeDir });
  const storePath = parseStorePath(info.storePath, deps.storeDir);
  if (storePath.hashPart !== upload.hashPart) {
    throw firnError(
      'FIRN_E_UPLOAD_PATH_MISMATCH',
      `narinfo for ${info.storePath} was sent to /${upload.hashPart}.narinfo`,
      { hint: `PUT it at /${storePath.hashPart}.narinfo` },
    );
  }
  const nar = await findNar(deps.index, info);
  checkAgainstNar(info, nar);
  const references = referenceHashParts(info, deps.storeDir);
  const existing = await deps.index.getPath(storePath.hashPart);
  if (existing !== undefined) return sameOrConflict(existing, info, references);
  if (deps.requireReferences)
    await checkReferencesPresent(deps.index, info, references, storePath.hashPart);

  const served: NarInfo = withSignature(
    {
      ...info,
      url: nar.key,
      fileHash: parseHash(nar.fileHash),
      fileSize: nar.fileSize,
      // Keep the uploader's signatures: clients that trust the builder's key may use them too.
      sigs: info.sigs,
    },
    deps.signingKey,
  );
  const record: PathRecord = {
    hashPart: storePath.hashPart,
    storePath: info.storePath,
    narKey: nar.key,
    narHash: nar.narHash,
    narSize: nar.narSize,
    fileSize: nar.fileSize,
    references,
    deriver: info.deriver,
    narinfo: serializeNarInfo(served),
    uploadedAt: Date.now(),
    uploadedBy: upload.uploadedBy,
  };
  const required = deps.requireReferences
    ? references.filter((hashPart) => hashPart !== storePath.hashPart)
    : [];
  if (await deps.index.addPath(record, required))
    return { created: true, storePath: info.storePath };
  // Another upload of the same path committed between our check and our insert.
  const winner = await deps.index.getPath(storePath.hashPart);
  if (winner === undefined) throw new Error(`path ${info.storePath} vanished during commit`);
  return sameOrConflict(winner, info, references);
}

async function findNar(index: CacheIndex, info: NarInfo): Promise<NarRecord> {
  const match = /^nar\/([^/?#]+)$/.exec(info.url);
  const key = match?.[1] === undefined ? undefined : parseNarFileName(match[1]).key;
  const nar = key === undefined ? undefined : await index.getNar(key);
  if (nar === undefined) {
    throw firnError(
      'FIRN_E_UPLOAD_NAR_MISSING',
      `narinfo for ${info.storePath} names ${info.url}, which this cache does not hold`,
      {
        hint: 'upload the NAR first (PUT /nar/<file>); `nix copy` does this in order',
      },
    );
  }
  return nar;
}

function checkAgainstNar(info: NarInfo, nar: NarRecord): void {
  const what = `narinfo for ${info.storePath}`;
  if (info.compression !== nar.compression) {
    throw firnError(
      'FIRN_E_BAD_REQUEST',
      `${what} says Compression: ${info.compression}, but ${nar.key} is ${nar.compression}`,
    );
  }
  if (info.fileHash !== undefined && !hashesEqual(info.fileHash, parseHash(nar.fileHash))) {
    throw mismatch(
      `${what}: FileHash ${formatHash(info.fileHash)} differs from the stored NAR's ${nar.fileHash}`,
    );
  }
  if (info.fileSize !== undefined && info.fileSize !== nar.fileSize) {
    throw sizeMismatch(
      `${what}: FileSize ${info.fileSize} differs from the stored NAR's ${nar.fileSize} bytes`,
    );
  }
  if (!hashesEqual(info.narHash, parseHash(nar.narHash))) {
    throw mismatch(
      `${what}: NarHash ${formatHash(info.narHash)} differs from the hash of the uploaded NAR, ${nar.narHash}`,
    );
  }
  if (info.narSize !== nar.narSize) {
    throw sizeMismatch(
      `${what}: NarSize ${info.narSize} differs from the uploaded NAR's ${nar.narSize} bytes`,
    );
  }
}

function referenceHashParts(info: NarInfo, storeDir: string): string[] {
  return [
    ...new Set(info.references.map((ref) => parseStorePathBase(ref, storeDir).hashPart)),
  ].sort();
}

async function checkReferencesPresent(
  index: CacheIndex,
  info: NarInfo,
  references: readonly string[],
  self: string,
): Promise<void> {
  const missing = await index.missing(references.filter((hashPart) => hashPart !== self));
  if (missing.length === 0) return;
  const names = info.references.filter((ref) =>
    missing.some((hashPart) => ref.startsWith(hashPart)),
  );
  throw firnError(
    'FIRN_E_UPLOAD_REFERENCE_MISSING',
    `refusing ${info.storePath}: the cache lacks ${missing.length} of its references (${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}), so clients could not substitute its closure`,
    {
      hint: 'upload the whole closure (nix copy does, dependencies first)',
      details: { missing: names },
    },
  );
}

function sameOrConflict(
  existing: PathRecord,
  info: NarInfo,
  references: readonly string[],
): NarInfoIngestResult {
  const same =
    existing.storePath === info.storePath &&
    hashesEqual(parseHash(existing.narHash), info.narHash) &&
    existing.narSize === info.narSize &&
    existing.references.join(' ') === references.join(' ');
  if (same) return { created: false, storePath: info.storePath };
  throw firnError(
    'FIRN_E_UPLOAD_CONFLICT',
    `${info.storePath} is already in the cache with different contents (NarHash ${existing.narHash}); stored paths are immutable`,
    {
      hint: 'the cache keeps serving the first upload; a different re-upload usually means a non-reproducible build',
    },
  );
}

function mismatch(message: string): Error {
  return firnError('FIRN_E_UPLOAD_HASH_MISMATCH', message, {
    hint: 'the narinfo does not describe the NAR that was uploaded',
  });
}

function sizeMismatch(message: string): Error {
  return firnError('FIRN_E_UPLOAD_SIZE_MISMATCH', message, {
    hint: 'the narinfo does not describe the NAR that was uploaded',
  });
}

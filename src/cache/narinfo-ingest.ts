/**
 * Accepting a narinfo upload. The cache never signs a hash it did not check: the narinfo must
 * name a NAR the cache holds, and its FileHash/FileSize/NarHash/NarSize must equal what the cache
 * measured when that NAR streamed in. By default every reference must already be in the cache,
 * so anything the cache serves can be substituted as a whole closure. Then the narinfo is signed
 * with the cache's key and committed with its references in one transaction.
 */
import { FirnError, firnError } from '../errors.ts';
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
  // Whether the path is already there and whether its references are is asked once, in the
  // index's commit: a second set of look-ups before it would cost as much as the commit itself.
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
  let added: boolean;
  try {
    added = await deps.index.addPath(record, required);
  } catch (error) {
    if (FirnError.is(error) && error.code === 'FIRN_E_UPLOAD_REFERENCE_MISSING')
      throw referencesMissing(info, missingOf(error));
    throw error;
  }
  if (added) return { created: true, storePath: info.storePath };
  const existing = await deps.index.getPath(storePath.hashPart);
  if (existing === undefined) throw new Error(`path ${info.storePath} vanished during commit`);
  return sameOrConflict(existing, info, references);
}

function missingOf(error: FirnError): string[] {
  const missing = error.details?.missing;
  return Array.isArray(missing) ? missing.filter((item) => typeof item === 'string') : [];
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

function referencesMissing(info: NarInfo, missing: readonly string[]): Error {
  const names = info.references.filter((ref) =>
    missing.some((hashPart) => ref.startsWith(hashPart)),
  );
  return firnError(
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

/**
 * One path's upload to any binary cache, as `nix copy` does it: `PUT /nar/<file>` with a
 * Content-Length, then, once the narinfos of its references are in the cache, its narinfo.
 * (firn's own cache also takes many small paths in one request: batch-upload.ts.)
 */
import { FirnError } from '../errors.ts';
import { serializeNarInfo, type NarInfo } from '../nix/narinfo.ts';
import type { CacheClient } from './cache-client.ts';
import { baseNameOf, hashPartOf } from './closure.ts';
import { changedPath, type PreparedNar } from './nar-prepare.ts';
import type { PathInfo } from './path-info.ts';

/**
 * PUTs the NAR. With `checkFirst`, asks with a HEAD whether the cache already holds it (after
 * an interrupted run the NAR may be there without its narinfo). Returns whether bytes were sent.
 */
export async function uploadNar(
  client: CacheClient,
  info: PathInfo,
  nar: PreparedNar,
  options: { checkFirst: boolean; signal?: AbortSignal | undefined },
): Promise<boolean> {
  const path = `nar/${nar.fileName}`;
  if (options.checkFirst) {
    const head = await client.request({ method: 'HEAD', path, signal: options.signal });
    if (head.status === 200) return false;
  }
  try {
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
  } catch (error) {
    throw storeChanged(error, info, nar);
  }
  return true;
}

/**
 * A NAR not hashed here carries the database's NarHash (in its name or its narinfo): when the
 * cache measures another hash, the store path changed under the database, which is what the
 * user must hear.
 */
function storeChanged(error: unknown, info: PathInfo, nar: PreparedNar): unknown {
  if (
    nar.hashedHere ||
    !FirnError.is(error) ||
    error.details?.serverCode !== 'FIRN_E_UPLOAD_HASH_MISMATCH'
  )
    return error;
  return changedPath(info, undefined, nar.narSize, error);
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
  try {
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
  } catch (error) {
    throw storeChanged(error, info, nar);
  }
}

/**
 * `firn cache verify`: re-reads every stored NAR, re-hashes it as stored and as a NAR, and
 * compares with what the index recorded when it was uploaded. Also finds paths whose NAR is gone.
 */
import { encodeNix32 } from '../nix/nix-base32.ts';
import type { BlobStore } from './blob-store.ts';
import type { CacheIndex } from './cache-index.ts';
import { measureNarFile } from './nar-digest.ts';

export interface VerifyProblem {
  readonly key: string;
  readonly problem: string;
}

export interface VerifyReport {
  readonly checked: number;
  readonly bytes: number;
  readonly problems: VerifyProblem[];
}

export async function verifyCache(
  index: CacheIndex,
  blobs: BlobStore,
  onProgress: (done: number, total: number, key: string) => void = () => undefined,
): Promise<VerifyReport> {
  const nars = await index.listNars();
  const problems: VerifyProblem[] = [];
  let bytes = 0;
  let done = 0;
  for (const nar of nars) {
    onProgress(done, nars.length, nar.key);
    const blob = await blobs.get(nar.key);
    if (blob === undefined) {
      problems.push({ key: nar.key, problem: 'the NAR file is missing' });
    } else {
      try {
        const facts = await measureNarFile(blob.body, nar.compression);
        bytes += facts.fileSize;
        const fileHash = `sha256:${encodeNix32(facts.fileHash)}`;
        const narHash = `sha256:${encodeNix32(facts.narHash)}`;
        if (fileHash !== nar.fileHash)
          problems.push({
            key: nar.key,
            problem: `file hash is ${fileHash}, recorded ${nar.fileHash}`,
          });
        if (facts.fileSize !== nar.fileSize)
          problems.push({
            key: nar.key,
            problem: `file size is ${facts.fileSize}, recorded ${nar.fileSize}`,
          });
        if (narHash !== nar.narHash)
          problems.push({
            key: nar.key,
            problem: `NAR hash is ${narHash}, recorded ${nar.narHash}`,
          });
        if (facts.narSize !== nar.narSize)
          problems.push({
            key: nar.key,
            problem: `NAR size is ${facts.narSize}, recorded ${nar.narSize}`,
          });
      } catch (error) {
        problems.push({
          key: nar.key,
          problem: `cannot be read or decompressed: ${(error as Error).message}`,
        });
      }
    }
    done++;
  }
  onProgress(done, nars.length, '');
  return { checked: nars.length, bytes, problems };
}

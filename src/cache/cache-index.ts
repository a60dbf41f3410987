/**
 * The cache's metadata: which NAR files it holds, which store paths (with their signed narinfo),
 * who references whom, tokens. Routes see only this interface, so a PostgreSQL index can replace
 * the SQLite one; every method is async for that reason even where SQLite answers at once.
 */
import type { Compression } from './compression.ts';

export interface NarRecord {
  /** Blob key, `nar/<file hash nix32>.nar[.ext]`. */
  readonly key: string;
  readonly compression: Compression;
  /** `sha256:<nix32>` of the stored (compressed) bytes. */
  readonly fileHash: string;
  readonly fileSize: number;
  /** `sha256:<nix32>` of the NAR itself. */
  readonly narHash: string;
  readonly narSize: number;
  readonly createdAt: number;
}

export interface PathRecord {
  readonly hashPart: string;
  readonly storePath: string;
  readonly narKey: string;
  readonly narHash: string;
  readonly narSize: number;
  readonly fileSize: number;
  /** Reference hash parts (self included when the path refers to itself). */
  readonly references: readonly string[];
  readonly deriver: string | undefined;
  /** The signed narinfo exactly as served. */
  readonly narinfo: string;
  readonly uploadedAt: number;
  readonly uploadedBy: string | undefined;
}

export interface PathSummary {
  readonly hashPart: string;
  readonly storePath: string;
  readonly narKey: string;
  readonly fileSize: number;
  readonly lastAccess: number;
  readonly uploadedAt: number;
}

export type TokenScope = 'read' | 'push' | 'admin';

export interface TokenRecord {
  readonly id: string;
  readonly name: string;
  readonly scope: TokenScope;
  readonly createdAt: number;
  readonly lastUsedAt: number | undefined;
}

export interface CacheStats {
  readonly paths: number;
  readonly nars: number;
  readonly narBytes: number;
  readonly narSizeTotal: number;
}

export interface DeletedPaths {
  readonly deleted: readonly string[];
  readonly orphanedNars: readonly string[];
}

export interface CacheIndex {
  getNarInfo(hashPart: string): Promise<string | undefined>;
  getPath(hashPart: string): Promise<PathRecord | undefined>;
  /** The hash parts among `hashParts` that the cache does not hold. */
  missing(hashParts: readonly string[]): Promise<string[]>;
  getNar(key: string): Promise<NarRecord | undefined>;
  /** Records a verified NAR; false (and the first record kept) if its key was already there. */
  putNar(record: NarRecord): Promise<boolean>;
  /** Adds a path atomically with its references. Returns false if the hash part already exists. */
  /** `requiredReferences` (hash parts) must exist at commit, else FIRN_E_UPLOAD_REFERENCE_MISSING. */
  addPath(record: PathRecord, requiredReferences?: readonly string[]): Promise<boolean>;
  /** Records reads for LRU eviction; implementations may batch these. */
  touch(hashPart: string, at: number): void;
  flushTouches(): Promise<void>;
  /** All paths, least recently used first, for garbage collection. */
  listPaths(): Promise<PathSummary[]>;
  /** Hash parts of paths that reference `hashPart` (not counting itself). */
  referrers(hashPart: string): Promise<string[]>;
  /** Hash parts `hashPart` references (itself included if it refers to itself). */
  referencesOf(hashPart: string): Promise<string[]>;
  /** Keys of NARs no path uses that were uploaded before `before` (abandoned uploads). */
  listUnusedNars(before: number): Promise<string[]>;
  /**
   * Deletes paths, skipping any that a remaining path references (one uploaded since the caller
   * planned, say). Returns the hash parts really deleted and the NAR keys no remaining path
   * uses; the caller deletes those blobs.
   */
  deletePaths(hashParts: readonly string[]): Promise<DeletedPaths>;
  listNars(): Promise<NarRecord[]>;
  deleteNar(key: string): Promise<void>;
  stats(): Promise<CacheStats>;

  createToken(token: {
    id: string;
    name: string;
    scope: TokenScope;
    secretHash: string;
    createdAt: number;
  }): Promise<void>;
  findToken(secretHash: string): Promise<TokenRecord | undefined>;
  listTokens(): Promise<TokenRecord[]>;
  revokeToken(idOrName: string): Promise<boolean>;

  close(): Promise<void>;
}

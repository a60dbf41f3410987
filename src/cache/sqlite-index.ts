/**
 * The default CacheIndex on node:sqlite, in the manner of pnpm's store index: busy_timeout first,
 * WAL, statements prepared once, WITHOUT ROWID tables, one transaction per path. The served
 * narinfo text is stored whole, so a narinfo GET is one primary-key lookup and no disk scan.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { firnError } from '../errors.ts';
import type {
  CacheIndex,
  CacheStats,
  DeletedPaths,
  NarRecord,
  PathRecord,
  PathSummary,
  TokenRecord,
  TokenScope,
} from './cache-index.ts';
import { isCompression } from './compression.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS nars (
  key TEXT PRIMARY KEY,
  compression TEXT NOT NULL,
  file_hash TEXT NOT NULL,
  file_size INTEGER NOT NULL,
  nar_hash TEXT NOT NULL,
  nar_size INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paths (
  hash_part TEXT PRIMARY KEY,
  store_path TEXT NOT NULL,
  nar_key TEXT NOT NULL REFERENCES nars(key),
  nar_hash TEXT NOT NULL,
  nar_size INTEGER NOT NULL,
  file_size INTEGER NOT NULL,
  deriver TEXT,
  narinfo TEXT NOT NULL,
  uploaded_at INTEGER NOT NULL,
  uploaded_by TEXT,
  last_access INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS paths_by_nar ON paths(nar_key);
CREATE TABLE IF NOT EXISTS refs (
  referrer TEXT NOT NULL REFERENCES paths(hash_part) ON DELETE CASCADE,
  reference TEXT NOT NULL,
  PRIMARY KEY (referrer, reference)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_by_reference ON refs(reference, referrer);
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  scope TEXT NOT NULL,
  secret_hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  last_used_at INTEGER
) STRICT, WITHOUT ROWID;
`;

interface NarRow {
  key: string;
  compression: string;
  file_hash: string;
  file_size: number;
  nar_hash: string;
  nar_size: number;
  created_at: number;
}

interface PathRow {
  hash_part: string;
  store_path: string;
  nar_key: string;
  nar_hash: string;
  nar_size: number;
  file_size: number;
  deriver: string | null;
  narinfo: string;
  uploaded_at: number;
  uploaded_by: string | null;
}

interface TokenRow {
  id: string;
  name: string;
  scope: string;
  created_at: number;
  last_used_at: number | null;
}

/** Narinfos kept in memory (about 1 KiB each); the oldest goes first when it is full. */
const NARINFO_MEMO_SIZE = 4096;
/** Recently recorded NARs kept in memory (about 300 bytes each). */
const NAR_MEMO_SIZE = 1024;
/** Tokens kept in memory; a fleet has a handful. */
const TOKEN_MEMO_SIZE = 256;

export class SqliteIndex implements CacheIndex {
  readonly #db: DatabaseSync;
  readonly #touches = new Map<string, number>();
  readonly #statements: Record<string, StatementSync>;
  /**
   * Served narinfos by hash part. Any statement costs a lock round trip (~12 µs under load, as
   * much as the rest of a narinfo GET), so hits are answered from memory. A row never changes
   * while it exists; only a delete makes a memo wrong. Our own deletes clear it; another
   * process's commits (gc, verify, a second server) change SQLite's data_version, which is read
   * at the first lookup of each event-loop turn, before any request of that turn is answered.
   */
  readonly #narinfos = new Map<string, string>();
  /**
   * Tokens by secret hash, with when their use was last recorded: every upload request presents
   * one. Revocation by another process (`firn cache token revoke`) changes data_version, which
   * empties this like the narinfo memo; our own create and revoke empty it too.
   */
  readonly #tokens = new Map<string, { record: TokenRecord; usedAt: number }>();
  /**
   * NARs recorded by this process lately: the narinfo PUT that follows a NAR PUT reads its
   * record back. Rows never change while they exist; deletes empty this like the memos above.
   */
  readonly #nars = new Map<string, NarRecord>();
  #dataVersion = -1;
  #checkedThisTurn = false;

  constructor(file: string) {
    try {
      this.#db = new DatabaseSync(file);
      this.#db.exec('PRAGMA busy_timeout = 5000');
      this.#db.exec('PRAGMA journal_mode = WAL');
      // NORMAL in WAL mode: a crash of firn loses nothing; a power cut may lose the last commits,
      // which start-up repair reconciles with the blobs (a blob without a row is removed).
      this.#db.exec('PRAGMA synchronous = NORMAL');
      this.#db.exec('PRAGMA foreign_keys = ON');
      this.#db.exec(SCHEMA);
    } catch (error) {
      throw firnError(
        'FIRN_E_STORE_BUSY',
        `cannot open the cache index ${file}: ${(error as Error).message}`,
        {
          cause: error,
          hint: 'check that the data directory is writable and not used by an incompatible firn version',
        },
      );
    }
    const db = this.#db;
    this.#statements = {
      begin: db.prepare('BEGIN IMMEDIATE'),
      commit: db.prepare('COMMIT'),
      rollback: db.prepare('ROLLBACK'),
      narinfo: db.prepare('SELECT narinfo FROM paths WHERE hash_part = ?'),
      dataVersion: db.prepare('PRAGMA data_version'),
      path: db.prepare('SELECT * FROM paths WHERE hash_part = ?'),
      pathRefs: db.prepare('SELECT reference FROM refs WHERE referrer = ? ORDER BY reference'),
      hasPath: db.prepare('SELECT 1 AS x FROM paths WHERE hash_part = ?'),
      nar: db.prepare('SELECT * FROM nars WHERE key = ?'),
      putNar: db.prepare(
        'INSERT OR IGNORE INTO nars (key, compression, file_hash, file_size, nar_hash, nar_size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      addPath: db.prepare(
        `INSERT OR IGNORE INTO paths (hash_part, store_path, nar_key, nar_hash, nar_size, file_size, deriver, narinfo,
           uploaded_at, uploaded_by, last_access) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      addRef: db.prepare('INSERT OR IGNORE INTO refs (referrer, reference) VALUES (?, ?)'),
      touch: db.prepare('UPDATE paths SET last_access = ? WHERE hash_part = ? AND last_access < ?'),
      listPaths: db.prepare(
        'SELECT hash_part, store_path, nar_key, file_size, last_access, uploaded_at FROM paths ORDER BY last_access, hash_part',
      ),
      referrers: db.prepare(
        'SELECT referrer FROM refs WHERE reference = ? AND referrer <> reference',
      ),
      unusedNars: db.prepare(
        'SELECT key FROM nars WHERE created_at < ? AND NOT EXISTS (SELECT 1 FROM paths WHERE nar_key = nars.key)',
      ),
      deletePath: db.prepare('DELETE FROM paths WHERE hash_part = ? RETURNING nar_key'),
      narUsers: db.prepare('SELECT 1 AS x FROM paths WHERE nar_key = ? LIMIT 1'),
      listNars: db.prepare('SELECT * FROM nars ORDER BY key'),
      deleteNar: db.prepare('DELETE FROM nars WHERE key = ?'),
      stats: db.prepare(
        `SELECT (SELECT count(*) FROM paths) AS paths, (SELECT count(*) FROM nars) AS nars,
                (SELECT coalesce(sum(file_size), 0) FROM nars) AS nar_bytes,
                (SELECT coalesce(sum(nar_size), 0) FROM nars) AS nar_size_total`,
      ),
      createToken: db.prepare(
        'INSERT INTO tokens (id, name, scope, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)',
      ),
      findToken: db.prepare(
        'SELECT id, name, scope, created_at, last_used_at FROM tokens WHERE secret_hash = ?',
      ),
      tokenUsed: db.prepare(
        'UPDATE tokens SET last_used_at = ? WHERE id = ? AND coalesce(last_used_at, 0) < ?',
      ),
      listTokens: db.prepare(
        'SELECT id, name, scope, created_at, last_used_at FROM tokens ORDER BY created_at, name',
      ),
      revokeToken: db.prepare('DELETE FROM tokens WHERE id = ? OR name = ?'),
    };
  }

  #stmt(name: string): StatementSync {
    const statement = this.#statements[name];
    if (statement === undefined) throw new Error(`no prepared statement ${name}`);
    return statement;
  }

  #transaction<T>(fn: () => T): T {
    this.#stmt('begin').run();
    try {
      const result = fn();
      this.#stmt('commit').run();
      return result;
    } catch (error) {
      this.#stmt('rollback').run();
      throw error;
    }
  }

  getNarInfo(hashPart: string): Promise<string | undefined> {
    this.#revalidateMemos();
    const known = this.#narinfos.get(hashPart);
    if (known !== undefined) return Promise.resolve(known);
    const row = this.#stmt('narinfo').get(hashPart) as { narinfo: string } | undefined;
    if (row !== undefined) {
      if (this.#narinfos.size >= NARINFO_MEMO_SIZE) {
        const oldest = this.#narinfos.keys().next();
        if (oldest.done !== true) this.#narinfos.delete(oldest.value);
      }
      this.#narinfos.set(hashPart, row.narinfo);
    }
    return Promise.resolve(row?.narinfo);
  }

  #revalidateMemos(): void {
    if (this.#checkedThisTurn) return;
    this.#checkedThisTurn = true;
    setImmediate(() => {
      this.#checkedThisTurn = false;
    });
    const { data_version: version } = this.#stmt('dataVersion').get() as { data_version: number };
    if (version !== this.#dataVersion) {
      this.#narinfos.clear();
      this.#tokens.clear();
      this.#nars.clear();
      this.#dataVersion = version;
    }
  }

  getPath(hashPart: string): Promise<PathRecord | undefined> {
    const row = this.#stmt('path').get(hashPart) as PathRow | undefined;
    if (row === undefined) return Promise.resolve(undefined);
    const references = (this.#stmt('pathRefs').all(hashPart) as { reference: string }[]).map(
      (ref) => ref.reference,
    );
    return Promise.resolve({
      hashPart: row.hash_part,
      storePath: row.store_path,
      narKey: row.nar_key,
      narHash: row.nar_hash,
      narSize: row.nar_size,
      fileSize: row.file_size,
      references,
      deriver: row.deriver ?? undefined,
      narinfo: row.narinfo,
      uploadedAt: row.uploaded_at,
      uploadedBy: row.uploaded_by ?? undefined,
    });
  }

  missing(hashParts: readonly string[]): Promise<string[]> {
    const has = this.#stmt('hasPath');
    return Promise.resolve(hashParts.filter((hashPart) => has.get(hashPart) === undefined));
  }

  getNar(key: string): Promise<NarRecord | undefined> {
    this.#revalidateMemos();
    const known = this.#nars.get(key);
    if (known !== undefined) return Promise.resolve(known);
    const row = this.#stmt('nar').get(key) as NarRow | undefined;
    return Promise.resolve(row === undefined ? undefined : narFromRow(row));
  }

  putNar(record: NarRecord): Promise<boolean> {
    const { changes } = this.#stmt('putNar').run(
      record.key,
      record.compression,
      record.fileHash,
      record.fileSize,
      record.narHash,
      record.narSize,
      record.createdAt,
    );
    if (changes === 0) return Promise.resolve(false);
    if (this.#nars.size >= NAR_MEMO_SIZE) this.#nars.clear();
    this.#nars.set(record.key, record);
    return Promise.resolve(true);
  }

  addPath(record: PathRecord, requiredReferences: readonly string[] = []): Promise<boolean> {
    // A refusal thrown in the executor rejects the promise instead of throwing at the caller.
    return new Promise((resolve) => {
      resolve(this.#addPath(record, requiredReferences));
    });
  }

  #addPath(record: PathRecord, requiredReferences: readonly string[]): boolean {
    return this.#transaction(() => {
      const result = this.#stmt('addPath').run(
        record.hashPart,
        record.storePath,
        record.narKey,
        record.narHash,
        record.narSize,
        record.fileSize,
        record.deriver ?? null,
        record.narinfo,
        record.uploadedAt,
        record.uploadedBy ?? null,
        record.uploadedAt,
      );
      // Already there: the caller compares; whether its references are still there is moot.
      if (result.changes === 0) return false;
      // Checked inside the transaction (the insert rolls back): gc may have evicted a reference.
      const missing = requiredReferences.filter(
        (hashPart) => this.#stmt('hasPath').get(hashPart) === undefined,
      );
      if (missing.length > 0) {
        throw firnError(
          'FIRN_E_UPLOAD_REFERENCE_MISSING',
          `refusing ${record.storePath}: the cache lacks ${missing.length} of its references (${missing.join(', ')})`,
          {
            hint: 'upload the missing references first, then this path',
            details: { missing },
          },
        );
      }
      for (const reference of record.references)
        this.#stmt('addRef').run(record.hashPart, reference);
      return true;
    });
  }

  touch(hashPart: string, at: number): void {
    this.#touches.set(hashPart, at);
  }

  flushTouches(): Promise<void> {
    if (this.#touches.size === 0) return Promise.resolve();
    const touches = [...this.#touches];
    this.#touches.clear();
    this.#transaction(() => {
      for (const [hashPart, at] of touches) this.#stmt('touch').run(at, hashPart, at);
    });
    return Promise.resolve();
  }

  listPaths(): Promise<PathSummary[]> {
    const rows = this.#stmt('listPaths').all() as {
      hash_part: string;
      store_path: string;
      nar_key: string;
      file_size: number;
      last_access: number;
      uploaded_at: number;
    }[];
    return Promise.resolve(
      rows.map((row) => ({
        hashPart: row.hash_part,
        storePath: row.store_path,
        narKey: row.nar_key,
        fileSize: row.file_size,
        lastAccess: row.last_access,
        uploadedAt: row.uploaded_at,
      })),
    );
  }

  referrers(hashPart: string): Promise<string[]> {
    const rows = this.#stmt('referrers').all(hashPart) as { referrer: string }[];
    return Promise.resolve(rows.map((row) => row.referrer));
  }

  referencesOf(hashPart: string): Promise<string[]> {
    return Promise.resolve(
      (this.#stmt('pathRefs').all(hashPart) as { reference: string }[]).map((row) => row.reference),
    );
  }

  listUnusedNars(before: number): Promise<string[]> {
    return Promise.resolve(
      (this.#stmt('unusedNars').all(before) as { key: string }[]).map((row) => row.key),
    );
  }

  deletePaths(hashParts: readonly string[]): Promise<DeletedPaths> {
    this.#narinfos.clear();
    this.#nars.clear();
    const result = this.#transaction((): DeletedPaths => {
      // A path uploaded since gc made its plan may reference one of these: that one stays, and
      // so do the paths it references in turn.
      const doomed = new Set(hashParts);
      for (let changed = true; changed;) {
        changed = false;
        for (const hashPart of doomed) {
          const referrers = this.#stmt('referrers').all(hashPart) as { referrer: string }[];
          if (referrers.some((row) => !doomed.has(row.referrer))) {
            doomed.delete(hashPart);
            changed = true;
          }
        }
      }
      const narKeys = new Set<string>();
      const deleted: string[] = [];
      for (const hashPart of doomed) {
        const row = this.#stmt('deletePath').get(hashPart) as { nar_key: string } | undefined;
        if (row === undefined) continue;
        deleted.push(hashPart);
        narKeys.add(row.nar_key);
      }
      const unused = [...narKeys].filter((key) => this.#stmt('narUsers').get(key) === undefined);
      for (const key of unused) this.#stmt('deleteNar').run(key);
      return { deleted, orphanedNars: unused };
    });
    return Promise.resolve(result);
  }

  listNars(): Promise<NarRecord[]> {
    return Promise.resolve((this.#stmt('listNars').all() as unknown as NarRow[]).map(narFromRow));
  }

  deleteNar(key: string): Promise<void> {
    this.#narinfos.clear();
    this.#nars.clear();
    this.#transaction(() => {
      for (const row of this.#db
        .prepare('SELECT hash_part FROM paths WHERE nar_key = ?')
        .all(key) as {
        hash_part: string;
      }[]) {
        this.#stmt('deletePath').get(row.hash_part);
      }
      this.#stmt('deleteNar').run(key);
    });
    return Promise.resolve();
  }

  stats(): Promise<CacheStats> {
    const row = this.#stmt('stats').get() as {
      paths: number;
      nars: number;
      nar_bytes: number;
      nar_size_total: number;
    };
    return Promise.resolve({
      paths: row.paths,
      nars: row.nars,
      narBytes: row.nar_bytes,
      narSizeTotal: row.nar_size_total,
    });
  }

  createToken(token: {
    id: string;
    name: string;
    scope: TokenScope;
    secretHash: string;
    createdAt: number;
  }): Promise<void> {
    try {
      this.#stmt('createToken').run(
        token.id,
        token.name,
        token.scope,
        token.secretHash,
        token.createdAt,
      );
    } catch (error) {
      if ((error as Error).message.includes('UNIQUE')) {
        throw firnError('FIRN_E_FILE_EXISTS', `a token named '${token.name}' already exists`, {
          hint: 'choose another --name, or revoke the old token first',
        });
      }
      throw error;
    }
    return Promise.resolve();
  }

  findToken(secretHash: string): Promise<TokenRecord | undefined> {
    this.#revalidateMemos();
    const now = Date.now();
    const known = this.#tokens.get(secretHash);
    // Record use at most once a minute per token: a write per request would serialise reads.
    if (known !== undefined && known.usedAt > now - 60_000) return Promise.resolve(known.record);
    const row = this.#stmt('findToken').get(secretHash) as TokenRow | undefined;
    if (row === undefined) {
      this.#tokens.delete(secretHash);
      return Promise.resolve(undefined);
    }
    this.#stmt('tokenUsed').run(now, row.id, now - 60_000);
    const record = tokenFromRow(row);
    if (this.#tokens.size >= TOKEN_MEMO_SIZE) this.#tokens.clear();
    this.#tokens.set(secretHash, { record, usedAt: now });
    return Promise.resolve(record);
  }

  listTokens(): Promise<TokenRecord[]> {
    return Promise.resolve(
      (this.#stmt('listTokens').all() as unknown as TokenRow[]).map(tokenFromRow),
    );
  }

  revokeToken(idOrName: string): Promise<boolean> {
    this.#tokens.clear();
    return Promise.resolve(this.#stmt('revokeToken').run(idOrName, idOrName).changes > 0);
  }

  async close(): Promise<void> {
    await this.flushTouches();
    this.#db.close();
  }
}

function narFromRow(row: NarRow): NarRecord {
  if (!isCompression(row.compression))
    throw new Error(`index holds unknown compression ${row.compression}`);
  return {
    key: row.key,
    compression: row.compression,
    fileHash: row.file_hash,
    fileSize: row.file_size,
    narHash: row.nar_hash,
    narSize: row.nar_size,
    createdAt: row.created_at,
  };
}

function tokenFromRow(row: TokenRow): TokenRecord {
  const scope =
    row.scope === 'read' || row.scope === 'push' || row.scope === 'admin' ? row.scope : 'read';
  return {
    id: row.id,
    name: row.name,
    scope,
    createdAt: row.created_at,
    lastUsedAt: row.last_used_at ?? undefined,
  };
}

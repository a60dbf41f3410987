/**
 * What the local Nix store knows about a path (NarHash, NarSize, references, deriver,
 * signatures, content address), read from Nix's SQLite database directly (read-only, as
 * harmonia does: microseconds per path) or, where that cannot be opened, from
 * `nix path-info --json`.
 */
import { join } from 'node:path';
import { firnError } from '../errors.ts';
import { parseHash, type Hash } from '../nix/hash.ts';
import { DEFAULT_STORE_DIR } from '../nix/store-path.ts';
import { runChecked, run } from '../process/run.ts';

export interface PathInfo {
  /** The logical path, `/nix/store/<hash>-<name>`, also in a chroot store. */
  readonly path: string;
  readonly narHash: Hash;
  readonly narSize: number;
  /** Full logical paths, possibly including the path itself. */
  readonly references: readonly string[];
  /** Full logical path of the .drv, when known. */
  readonly deriver: string | undefined;
  readonly sigs: readonly string[];
  readonly ca: string | undefined;
}

/** Where the store lives on disk: `/` for the real one, the root directory of a chroot store. */
export interface LocalStore {
  readonly root: string;
  readonly storeDir: string;
}

export function localStore(root = '/'): LocalStore {
  return { root, storeDir: DEFAULT_STORE_DIR };
}

/** Where a logical store path's files are on this machine. */
export function physicalPath(store: LocalStore, path: string): string {
  return store.root === '/' ? path : join(store.root, path);
}

export interface PathInfoSource {
  readonly kind: 'db' | 'nix';
  /** Infos of the closure of `roots`; throws FIRN_E_PATH_NOT_IN_STORE naming absent roots. */
  closure(roots: readonly string[]): Promise<Map<string, PathInfo>>;
  /** Which of `paths` the store holds. */
  valid(paths: readonly string[]): Promise<Set<string>>;
  close(): void;
}

export type PathInfoMode = 'auto' | 'db' | 'nix';

/** The database when it opens (`auto` falls back to the nix CLI when it does not). */
export async function openPathInfoSource(options: {
  store: LocalStore;
  mode: PathInfoMode;
  env?: NodeJS.ProcessEnv;
}): Promise<PathInfoSource> {
  if (options.mode !== 'nix') {
    try {
      return await openNixDb(options.store);
    } catch (error) {
      if (options.mode === 'db') throw error;
    }
  }
  return nixCliSource(options.store, options.env ?? process.env);
}

export function notInStore(paths: readonly string[], store: LocalStore): Error {
  const shown = paths.slice(0, 5).join(', ') + (paths.length > 5 ? ', …' : '');
  return firnError(
    'FIRN_E_PATH_NOT_IN_STORE',
    `${paths.length === 1 ? 'path' : `${paths.length} paths`} not valid in the local Nix store${store.root === '/' ? '' : ` at ${store.root}`}: ${shown}`,
    {
      hint:
        store.root === '/'
          ? 'build or substitute it first (nix-build, nix build), or check for a typo'
          : 'check --store: it must be the root of the chroot store that holds the path',
      details: { paths },
    },
  );
}

interface DbRow {
  id: number;
  path: string;
  hash: string;
  deriver: string | null;
  narSize: number | null;
  sigs: string | null;
  ca: string | null;
}

async function openNixDb(store: LocalStore): Promise<PathInfoSource> {
  const { DatabaseSync } = await import('node:sqlite');
  const file = join(store.root, 'nix/var/nix/db/db.sqlite');
  const db = new DatabaseSync(file, { readOnly: true, timeout: 10_000 });
  try {
    const byPath = db.prepare(
      'SELECT id, path, hash, deriver, narSize, sigs, ca FROM ValidPaths WHERE path = ?',
    );
    const refs = db.prepare(
      'SELECT v.path AS path FROM Refs r JOIN ValidPaths v ON r.reference = v.id WHERE r.referrer = ?',
    );
    const lookup = (path: string): PathInfo | undefined => {
      const row = byPath.get(path) as DbRow | undefined;
      if (row === undefined) return undefined;
      const references = (refs.all(row.id) as { path: string }[]).map((ref) => ref.path);
      return infoFromRow(row, references);
    };
    return {
      kind: 'db',
      closure(roots) {
        return Promise.resolve(walkClosure(roots, lookup, store));
      },
      valid(paths) {
        return Promise.resolve(new Set(paths.filter((path) => byPath.get(path) !== undefined)));
      },
      close() {
        db.close();
      },
    };
  } catch (error) {
    db.close();
    throw error;
  }
}

function infoFromRow(row: DbRow, references: string[]): PathInfo {
  return {
    path: row.path,
    narHash: parseHash(row.hash),
    narSize: row.narSize ?? 0,
    references: references.sort(),
    deriver: row.deriver ?? undefined,
    sigs: row.sigs === null ? [] : row.sigs.split(' ').filter((sig) => sig !== ''),
    ca: row.ca === null || row.ca === '' ? undefined : row.ca,
  };
}

function walkClosure(
  roots: readonly string[],
  lookup: (path: string) => PathInfo | undefined,
  store: LocalStore,
): Map<string, PathInfo> {
  const result = new Map<string, PathInfo>();
  const absent = roots.filter((root) => lookup(root) === undefined);
  if (absent.length > 0) throw notInStore(absent, store);
  const queue = [...roots];
  for (let path = queue.pop(); path !== undefined; path = queue.pop()) {
    if (result.has(path)) continue;
    const info = lookup(path);
    if (info === undefined)
      throw new Error(`the Nix database lists ${path} as a reference but not as valid`);
    result.set(path, info);
    for (const ref of info.references) if (!result.has(ref)) queue.push(ref);
  }
  return result;
}

interface NixJsonInfo {
  path: string;
  valid?: boolean;
  narHash?: string;
  narSize?: number;
  references?: string[];
  deriver?: string;
  signatures?: string[];
  ca?: string;
}

function nixCliSource(store: LocalStore, env: NodeJS.ProcessEnv): PathInfoSource {
  // Never let a path-info query reach for a substituter: an absent path would be "built".
  const common = [
    ...(store.root === '/' ? [] : ['--store', store.root]),
    '--option',
    'substituters',
    '',
  ];
  return {
    kind: 'nix',
    async closure(roots) {
      if (roots.length === 0) return new Map();
      const invalid = await invalidPaths(roots);
      if (invalid.length > 0) throw notInStore(invalid, store);
      const result = await runChecked(
        'nix',
        [
          '--extra-experimental-features',
          'nix-command',
          'path-info',
          '--json',
          '--recursive',
          ...common,
          ...roots,
        ],
        { env },
      );
      const infos = JSON.parse(result.stdout.toString('utf8')) as NixJsonInfo[];
      return new Map(infos.map((info) => [info.path, infoFromJson(info)]));
    },
    async valid(paths) {
      const invalid = new Set(await invalidPaths(paths));
      return new Set(paths.filter((path) => !invalid.has(path)));
    },
    close() {
      // nothing held open
    },
  };

  async function invalidPaths(paths: readonly string[]): Promise<string[]> {
    if (paths.length === 0) return [];
    const result = await run(
      'nix-store',
      [...common, '--check-validity', '--print-invalid', ...paths],
      { env },
    );
    if (result.code !== 0) {
      throw firnError(
        'FIRN_E_SUBPROCESS',
        `nix-store --check-validity failed: ${result.stderr.trim()}`,
      );
    }
    return result.stdout
      .toString('utf8')
      .split('\n')
      .filter((line) => line !== '');
  }
}

function infoFromJson(info: NixJsonInfo): PathInfo {
  if (info.narHash === undefined || info.narSize === undefined) {
    throw firnError('FIRN_E_SUBPROCESS', `nix path-info gave no NarHash for ${info.path}`);
  }
  return {
    path: info.path,
    narHash: parseHash(info.narHash),
    narSize: info.narSize,
    references: [...(info.references ?? [])].sort(),
    deriver: info.deriver,
    sigs: info.signatures ?? [],
    ca: info.ca,
  };
}

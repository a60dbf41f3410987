/**
 * Restores a NAR into a new path, like `nix-store --restore`, but never writes outside it.
 *
 * Safety rests on three things: the reader refuses names that are empty, `.`, `..` or hold `/`
 * or NUL, and duplicate names; every path is built below DEST from those names, and every
 * directory on the way was created by this unpack (mkdir fails if anything is there already);
 * files are created with O_CREAT|O_EXCL|O_NOFOLLOW, so an existing file or symlink is never
 * opened. A symlink a NAR holds can never be a parent of a later entry. Directories stay 0700
 * until they are complete, so no other user can slip a symlink into them meanwhile. On any
 * error the partial DEST is removed.
 */
import {
  closeSync,
  constants,
  chmodSync,
  fchmodSync,
  lstatSync,
  mkdirSync,
  openSync,
  rmSync,
  statSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { dirname, resolve } from 'node:path';
import { firnError, fromFsError } from '../errors.ts';
import { displayNarPath } from './nar-format.ts';
import { NarParser, asBuffer, type NarEvent } from './nar-reader.ts';

const CREATE_FLAGS =
  constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export interface UnpackResult {
  /** Bytes of NAR read. */
  readonly narSize: number;
  readonly files: number;
  readonly directories: number;
  readonly symlinks: number;
}

/** Checks that `dest` does not exist and its parent is a directory; returns it absolute. */
function checkDestination(dest: string): string {
  const absolute = resolve(dest);
  let exists = true;
  try {
    lstatSync(absolute);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // ENOTDIR: a parent is a file; the parent check below says so.
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw fromFsError(error, dest, 'use');
    exists = false;
  }
  if (exists) {
    throw firnError('FIRN_E_FILE_EXISTS', `cannot unpack into ${dest}: it already exists`, {
      hint: 'unpack creates the destination itself; name a path that does not exist yet',
    });
  }
  let parent;
  try {
    parent = statSync(dirname(absolute));
  } catch (error) {
    throw fromFsError(error, dirname(absolute), 'unpack into');
  }
  if (!parent.isDirectory()) {
    throw firnError(
      'FIRN_E_FILE_NOT_FOUND',
      `cannot unpack into ${dest}: its parent is not a directory`,
    );
  }
  return absolute;
}

/** Writes the events of one NAR below `root`; owns the open file and the created paths. */
class Restorer {
  readonly #root: Buffer;
  #created = false;
  #fd: number | undefined;
  #fdPath = '';
  #remaining = 0;
  #executable = false;
  files = 0;
  directories = 0;
  symlinks = 0;

  constructor(root: string) {
    this.#root = Buffer.from(root);
  }

  get created(): boolean {
    return this.#created;
  }

  apply(event: NarEvent): void {
    switch (event.type) {
      case 'directory':
        this.#attempt(event.path, 'create directory', (path) => {
          mkdirSync(path, { mode: 0o700 });
        });
        this.#created = true;
        this.directories++;
        return;
      case 'directory-end':
        this.#attempt(event.path, 'set the mode of', (path) => {
          chmodSync(path, 0o755);
        });
        return;
      case 'regular':
        this.#attempt(event.path, 'create', (path) => {
          this.#fd = openSync(path, CREATE_FLAGS, 0o600);
        });
        this.#created = true;
        this.#fdPath = displayNarPath(event.path);
        this.#remaining = event.size;
        this.#executable = event.executable;
        this.files++;
        if (event.size === 0) this.#closeFile();
        return;
      case 'contents':
        this.#write(event.data);
        return;
      case 'symlink':
        this.#attempt(event.path, 'create symlink', (path) => {
          symlinkSync(event.target, path);
        });
        this.#created = true;
        this.symlinks++;
        return;
    }
  }

  #write(data: Buffer): void {
    const fd = this.#fd;
    if (fd === undefined) throw new Error('NAR unpack: contents without an open file');
    let done = 0;
    try {
      while (done < data.length) done += writeSync(fd, data, done, data.length - done);
    } catch (error) {
      throw fromFsError(error, this.#fdPath, 'write');
    }
    this.#remaining -= data.length;
    if (this.#remaining === 0) this.#closeFile();
  }

  #closeFile(): void {
    const fd = this.#fd;
    if (fd === undefined) return;
    this.#fd = undefined;
    try {
      fchmodSync(fd, this.#executable ? 0o755 : 0o644);
    } catch (error) {
      throw fromFsError(error, this.#fdPath, 'set the mode of');
    } finally {
      closeSync(fd);
    }
  }

  /** Closes an open file after a failure, so DEST can be removed. */
  abandon(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  /** Runs `action` on the absolute path of `narPath`, mapping fs errors to FirnErrors. */
  #attempt(narPath: Buffer, verb: string, action: (path: Buffer) => void): void {
    if (narPath.length > 0 && (narPath.includes(0) || hasBadSegment(narPath))) {
      // The reader already refuses such names; this guards against a broken caller.
      throw firnError('FIRN_E_UNPACK_UNSAFE', `refusing to ${verb} ${displayNarPath(narPath)}`);
    }
    const path = narPath.length === 0 ? this.#root : Buffer.concat([this.#root, SLASH, narPath]);
    try {
      action(path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' || code === 'ELOOP' || code === 'ENOTDIR') {
        throw firnError(
          'FIRN_E_UNPACK_UNSAFE',
          `cannot ${verb} ${displayNarPath(narPath)} in the destination: something is already there (${code})`,
          { cause: error, hint: 'another process may be writing into the destination' },
        );
      }
      throw fromFsError(error, path.toString('utf8'), verb);
    }
  }
}

const SLASH = Buffer.from('/');

function hasBadSegment(path: Buffer): boolean {
  return path
    .toString('latin1')
    .split('/')
    .some((segment) => segment === '' || segment === '.' || segment === '..');
}

/**
 * Unpacks the NAR in `source` into `dest`, which must not exist (its parent must). The root
 * of the NAR becomes `dest` itself: a directory, a file or a symlink. On failure nothing is
 * left behind.
 */
export async function unpackNar(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  dest: string,
): Promise<UnpackResult> {
  const root = checkDestination(dest);
  const restorer = new Restorer(root);
  const parser = new NarParser();
  try {
    for await (const chunk of source) {
      for (const event of parser.push(asBuffer(chunk))) restorer.apply(event);
    }
    parser.end();
  } catch (error) {
    restorer.abandon();
    if (restorer.created) rmSync(root, { recursive: true, force: true });
    throw error;
  }
  return {
    narSize: parser.offset,
    files: restorer.files,
    directories: restorer.directories,
    symlinks: restorer.symlinks,
  };
}

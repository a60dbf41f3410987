/**
 * The checks on what NAR nodes hold, beyond the grammar: which entry names are acceptable, and
 * the errors for names, symlink targets and file sizes that break the rules; plus joining a
 * name onto its directory's path. Plain functions, kept out of `nar-parser.ts` so the state
 * machine reads as transitions; the error builders run only on the failure path.
 */
import type { FirnError } from '../errors.ts';
import { NAR_LIMITS, displayNarPath } from './nar-format.ts';
import { formatSize, narError } from './nar-lexer.ts';

const SLASH = 0x2f;

/** `dir/name` in one allocation (Buffer.concat is slow for small pieces). */
export function joinPath(dir: Buffer, name: Buffer): Buffer {
  const path = Buffer.allocUnsafe(dir.length + 1 + name.length);
  dir.copy(path, 0);
  path[dir.length] = SLASH;
  name.copy(path, dir.length + 1);
  return path;
}

/** Nix refuses these names on restore; they could also step out of the destination. */
export function isValidName(name: Buffer): boolean {
  if (name.length === 0 || name.includes(SLASH) || name.includes(0)) return false;
  if (name[0] !== 0x2e) return true;
  return !(name.length === 1 || (name.length === 2 && name[1] === 0x2e));
}

/** `name` (at byte `at`) in the directory `dir` is not a valid name. */
export function badName(name: Buffer, dir: Buffer, at: number): FirnError {
  return narError(
    'FIRN_E_NAR_BAD_NAME',
    `entry ${JSON.stringify(name.toString('utf8'))} in ${displayNarPath(dir)}: names must not be empty, ".", ".." or contain "/" or NUL`,
    at,
  );
}

/** `name` does not sort strictly after `previous` in the directory `dir`. */
export function unsorted(previous: Buffer, name: Buffer, dir: Buffer, at: number): FirnError {
  const same = previous.equals(name);
  return narError(
    'FIRN_E_NAR_UNSORTED',
    `entry ${JSON.stringify(name.toString('utf8'))} in ${displayNarPath(dir)} ${same ? 'appears twice' : `comes after ${JSON.stringify(previous.toString('utf8'))}; entries must be sorted bytewise`}`,
    at,
  );
}

/** An entry of `dir` would nest deeper than NAR_LIMITS.depth. */
export function tooDeep(dir: Buffer, at: number): FirnError {
  return narError(
    'FIRN_E_NAR_LIMIT',
    `directories are nested more than ${NAR_LIMITS.depth} deep at ${displayNarPath(dir)}`,
    at,
  );
}

/** The symlink at `path` has an empty target or one containing NUL. */
export function badTarget(path: Buffer, target: Buffer, at: number): FirnError {
  return narError(
    'FIRN_E_NAR_BAD_NAME',
    `symlink ${displayNarPath(path)} has ${target.length === 0 ? 'an empty target' : 'a target containing NUL'}, which no file system can hold`,
    at,
  );
}

/** The file at `path` claims more bytes than a JS number holds exactly. */
export function fileTooLarge(path: Buffer, size: number, at: number): FirnError {
  return narError(
    'FIRN_E_NAR_LIMIT',
    `file ${displayNarPath(path)} claims ${formatSize(size)} bytes, more than the limit of 2^53 - 1`,
    at,
  );
}

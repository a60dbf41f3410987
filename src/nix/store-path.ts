/**
 * Store paths: `<storeDir>/<hash>-<name>`, where `<hash>` is 32 nix-base32 characters (a
 * 160-bit digest) and `<name>` follows the rules of Nix 2.8's `checkName`
 * (src/libstore/path.cc at tag 2.8.0).
 */
import { firnError } from '../errors.ts';
import { isNix32 } from './nix-base32.ts';

export const DEFAULT_STORE_DIR = '/nix/store';

/** Length of the hash part of a store path, in nix-base32 characters. */
export const HASH_PART_LENGTH = 32;

/** Longest name Nix accepts (Nix 2.8 `checkName`). */
export const MAX_NAME_LENGTH = 211;

export interface StorePath {
  readonly storeDir: string;
  readonly hashPart: string;
  readonly name: string;
}

/** `[A-Za-z0-9+\-._?=]`, non-empty. Nix 2.8 (unlike Nix 2.3 and Nix ≥ 2.20) allows any leading dot. */
const NAME_CHARS = /^[A-Za-z0-9+\-._?=]+$/;

export function isValidHashPart(text: string): boolean {
  return text.length === HASH_PART_LENGTH && isNix32(text);
}

/** Why `name` is not a valid store path name, or undefined when it is. */
export function storePathNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (name.length > MAX_NAME_LENGTH) {
    return `the name is ${name.length} characters long, more than ${MAX_NAME_LENGTH}`;
  }
  if (!NAME_CHARS.test(name)) {
    const bad = /[^A-Za-z0-9+\-._?=]/.exec(name)?.[0] ?? '';
    return `the name contains the character ${JSON.stringify(bad)}; allowed are A-Z a-z 0-9 and + - . _ ? =`;
  }
  return undefined;
}

export function isValidStorePathName(name: string): boolean {
  return storePathNameProblem(name) === undefined;
}

/** Parses a base name `<hash>-<name>` such as a narinfo reference. */
export function parseStorePathBase(baseName: string, storeDir = DEFAULT_STORE_DIR): StorePath {
  const problem = baseNameProblem(baseName);
  if (problem !== undefined) {
    throw firnError(
      'FIRN_E_STORE_PATH_INVALID',
      `${quoteForMessage(baseName)} is not a valid store path base name: ${problem}`,
      { hint: 'a store path base name looks like <32 nix-base32 characters>-<name>' },
    );
  }
  return {
    storeDir,
    hashPart: baseName.slice(0, HASH_PART_LENGTH),
    name: baseName.slice(HASH_PART_LENGTH + 1),
  };
}

/** Parses a full path `<storeDir>/<hash>-<name>`; it must be written exactly so (no `//`, no trailing `/`). */
export function parseStorePath(path: string, storeDir = DEFAULT_STORE_DIR): StorePath {
  const prefix = `${storeDir}/`;
  if (!path.startsWith(prefix)) {
    throw firnError(
      'FIRN_E_STORE_PATH_INVALID',
      `${quoteForMessage(path)} is not a store path: it is not directly inside ${storeDir}`,
      { hint: `a store path looks like ${storeDir}/<32 nix-base32 characters>-<name>` },
    );
  }
  const baseName = path.slice(prefix.length);
  const problem = baseName.includes('/')
    ? 'it names something below a store path, not a store path'
    : baseNameProblem(baseName);
  if (problem !== undefined) {
    throw firnError(
      'FIRN_E_STORE_PATH_INVALID',
      `${quoteForMessage(path)} is not a valid store path: ${problem}`,
      { hint: `a store path looks like ${storeDir}/<32 nix-base32 characters>-<name>` },
    );
  }
  return parseStorePathBase(baseName, storeDir);
}

export function storePathBase(p: StorePath): string {
  return `${p.hashPart}-${p.name}`;
}

export function formatStorePath(p: StorePath): string {
  return `${p.storeDir}/${storePathBase(p)}`;
}

function baseNameProblem(baseName: string): string | undefined {
  if (baseName.length < HASH_PART_LENGTH + 2) return 'it is too short';
  const hashPart = baseName.slice(0, HASH_PART_LENGTH);
  if (!isValidHashPart(hashPart)) {
    return `its hash part ${JSON.stringify(hashPart)} is not 32 nix-base32 characters`;
  }
  // Nix 2.8 never checks this character; every path it creates has a dash here.
  if (baseName[HASH_PART_LENGTH] !== '-') return 'the hash part is not followed by "-"';
  return storePathNameProblem(baseName.slice(HASH_PART_LENGTH + 1));
}

/** Quotes untrusted text for an error message, cut short so a huge input makes a short message. */
export function quoteForMessage(text: string, max = 240): string {
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
}

/** Index of the first ASCII control character (U+0000–U+001F, U+007F) in `text`, or -1. */
export function controlCharIndex(text: string): number {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return i;
  }
  return -1;
}

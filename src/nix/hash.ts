/**
 * Hashes in every textual form Nix reads and writes: base16, nix-base32, base64, SRI
 * (`sha256-<base64>`) and the prefixed `sha256:<any of the three>`.
 */
import { createHash } from 'node:crypto';
import { firnError } from '../errors.ts';
import { decodeNix32, encodeNix32, nix32Length } from './nix-base32.ts';

export const HASH_ALGORITHMS = ['md5', 'sha1', 'sha256', 'sha512'] as const;
export type HashAlgorithm = (typeof HASH_ALGORITHMS)[number];

export const HASH_SIZES: Readonly<Record<HashAlgorithm, number>> = {
  md5: 16,
  sha1: 20,
  sha256: 32,
  sha512: 64,
};

export type HashEncoding = 'base16' | 'nix32' | 'base64' | 'sri';

export interface Hash {
  readonly algorithm: HashAlgorithm;
  readonly digest: Buffer;
}

export function isHashAlgorithm(name: string): name is HashAlgorithm {
  return (HASH_ALGORITHMS as readonly string[]).includes(name);
}

export function parseHashAlgorithm(name: string): HashAlgorithm {
  if (!isHashAlgorithm(name)) {
    throw firnError('FIRN_E_HASH_ALGO_UNSUPPORTED', `unsupported hash algorithm '${name}'`, {
      hint: `use one of ${HASH_ALGORITHMS.join(', ')}`,
    });
  }
  return name;
}

export function hashBytes(algorithm: HashAlgorithm, data: Uint8Array | string): Hash {
  return { algorithm, digest: createHash(algorithm).update(data).digest() };
}

/** Renders `hash`; only SRI carries the algorithm, the others are the bare digest. */
export function formatDigest(hash: Hash, encoding: Exclude<HashEncoding, 'sri'>): string {
  switch (encoding) {
    case 'base16':
      return hash.digest.toString('hex');
    case 'nix32':
      return encodeNix32(hash.digest);
    case 'base64':
      return hash.digest.toString('base64');
  }
}

/** `sha256:<nix32>` and friends; `sri` gives `sha256-<base64>`. */
export function formatHash(hash: Hash, encoding: HashEncoding = 'nix32'): string {
  if (encoding === 'sri') return `${hash.algorithm}-${hash.digest.toString('base64')}`;
  return `${hash.algorithm}:${formatDigest(hash, encoding)}`;
}

const BASE16 = /^[0-9a-fA-F]*$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Decodes a bare digest of `algorithm`, telling the encoding apart by its length as Nix does. */
export function parseDigest(text: string, algorithm: HashAlgorithm): Hash {
  const size = HASH_SIZES[algorithm];
  if (text.length === size * 2 && BASE16.test(text)) {
    return { algorithm, digest: Buffer.from(text, 'hex') };
  }
  if (text.length === nix32Length(size)) {
    return { algorithm, digest: decodeNix32(text, size) };
  }
  if (text.length === Math.ceil(size / 3) * 4 && BASE64.test(text)) {
    const digest = Buffer.from(text, 'base64');
    if (digest.length === size && digest.toString('base64') === text) return { algorithm, digest };
  }
  throw firnError(
    'FIRN_E_HASH_INVALID',
    `'${text}' is not a ${algorithm} hash in base16, nix-base32 or base64 (wrong length or characters)`,
  );
}

/**
 * Parses `sha256:…`, `sha256-…` (SRI) or, when `defaultAlgorithm` is given, a bare digest.
 * When `expected` is given the algorithm must match it.
 */
export function parseHash(
  text: string,
  options: { defaultAlgorithm?: HashAlgorithm; expected?: HashAlgorithm } = {},
): Hash {
  const colon = text.indexOf(':');
  const dash = text.indexOf('-');
  let hash: Hash;
  if (colon > 0 && (dash < 0 || colon < dash)) {
    hash = parseDigest(text.slice(colon + 1), parseHashAlgorithm(text.slice(0, colon)));
  } else if (dash > 0 && isHashAlgorithm(text.slice(0, dash))) {
    hash = parseSriDigest(text.slice(dash + 1), parseHashAlgorithm(text.slice(0, dash)));
  } else if (options.defaultAlgorithm !== undefined) {
    hash = parseDigest(text, options.defaultAlgorithm);
  } else {
    throw firnError('FIRN_E_HASH_INVALID', `'${text}' has no hash algorithm`, {
      hint: "write it as 'sha256:<digest>' or in SRI form 'sha256-<base64>'",
    });
  }
  if (options.expected !== undefined && hash.algorithm !== options.expected) {
    throw firnError(
      'FIRN_E_HASH_INVALID',
      `'${text}' is a ${hash.algorithm} hash, expected ${options.expected}`,
    );
  }
  return hash;
}

function parseSriDigest(text: string, algorithm: HashAlgorithm): Hash {
  const digest = BASE64.test(text) ? Buffer.from(text, 'base64') : Buffer.alloc(0);
  if (digest.length !== HASH_SIZES[algorithm] || digest.toString('base64') !== text) {
    throw firnError(
      'FIRN_E_HASH_INVALID',
      `'${algorithm}-${text}' is not a valid SRI ${algorithm} hash`,
    );
  }
  return { algorithm, digest };
}

export function hashesEqual(a: Hash, b: Hash): boolean {
  return a.algorithm === b.algorithm && a.digest.equals(b.digest);
}

/**
 * Ed25519 signing keys and narinfo signatures in Nix's formats (src/libstore/crypto.cc and
 * ValidPathInfo::fingerprint at tag 2.8.0), done with node:crypto.
 *
 * A secret key is `name:base64(seed ‖ public key)` (libsodium's 64-byte secret key), a public
 * key `name:base64(32 bytes)`, a signature `name:base64(64 bytes)` over the fingerprint
 * `1;<store path>;<algo>:<nix32 narHash>;<narSize>;<sorted full reference paths, comma-joined>`.
 * Secret key bytes never appear in an error message.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import { FirnError, firnError, fromFsError } from '../errors.ts';
import { formatHash } from './hash.ts';
import type { NarInfo } from './narinfo.ts';
import { controlCharIndex, quoteForMessage } from './store-path.ts';

export interface SecretKey {
  readonly name: string;
  /** The 32-byte Ed25519 seed (libsodium's secret key is seed ‖ public key). */
  readonly seed: Buffer;
  readonly publicKey: Buffer;
}

export interface PublicKey {
  readonly name: string;
  readonly key: Buffer;
}

const SEED_BYTES = 32;
const PUBLIC_KEY_BYTES = 32;
const SIGNATURE_BYTES = 64;
/** Key files are about 100 bytes; anything much larger is not a key. */
const MAX_KEY_FILE_BYTES = 64 * 1024;

/** Why `name` cannot name a key, or undefined. Nix splits at the first ':'; nix.conf splits keys at whitespace. */
export function keyNameProblem(name: string): string | undefined {
  if (name === '') return 'the key name is empty';
  if (name.includes(':')) return 'the key name contains ":"';
  if (/\s/.test(name) || controlCharIndex(name) >= 0)
    return 'the key name contains whitespace or a control character';
  return undefined;
}

export function generateSecretKey(name: string): SecretKey {
  checkKeyName(name);
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  if (jwk.d === undefined || jwk.x === undefined)
    throw new Error('ed25519 JWK export lacks d or x');
  return {
    name,
    seed: Buffer.from(jwk.d, 'base64url'),
    publicKey: Buffer.from(jwk.x, 'base64url'),
  };
}

/** Parses `name:base64(64 bytes)`; the public half must be the one the seed derives. */
export function parseSecretKey(text: string): SecretKey {
  const { name, bytes } = splitKey(text, SEED_BYTES + PUBLIC_KEY_BYTES, 'secret');
  const key: SecretKey = {
    name,
    seed: bytes.subarray(0, SEED_BYTES),
    publicKey: bytes.subarray(SEED_BYTES),
  };
  if (!derivePublicKey(key.seed).equals(key.publicKey)) {
    throw firnError(
      'FIRN_E_KEY_INVALID',
      `secret key '${name}' is not valid: its public half does not match its seed`,
      { hint: 'the key file is damaged; use a fresh copy or generate a new key' },
    );
  }
  return key;
}

/** Parses `name:base64(32 bytes)`. */
export function parsePublicKey(text: string): PublicKey {
  const { name, bytes } = splitKey(text, PUBLIC_KEY_BYTES, 'public');
  return { name, key: bytes };
}

export function formatSecretKey(k: SecretKey): string {
  return `${k.name}:${Buffer.concat([k.seed, k.publicKey]).toString('base64')}`;
}

export function formatPublicKey(k: PublicKey): string {
  return `${k.name}:${k.key.toString('base64')}`;
}

export function publicKeyOf(k: SecretKey): PublicKey {
  return { name: k.name, key: k.publicKey };
}

/** The string Nix signs for a path. References are base names; storeDir defaults to the StorePath's. */
export function fingerprintNarInfo(
  info: Pick<NarInfo, 'storePath' | 'narHash' | 'narSize' | 'references'>,
  storeDir = info.storePath.slice(0, info.storePath.lastIndexOf('/')),
): string {
  if (info.narSize === 0) {
    throw firnError(
      'FIRN_E_NARINFO_INVALID',
      `cannot fingerprint ${quoteForMessage(info.storePath)}: its NarSize is 0`,
    );
  }
  // Nix keeps references in a std::set: sorted, without duplicates.
  const references = [...new Set(info.references)]
    .sort(compareBytes)
    .map((ref) => `${storeDir}/${ref}`);
  return `1;${info.storePath};${formatHash(info.narHash, 'nix32')};${info.narSize};${references.join(',')}`;
}

/** The `Sig` value (`name:base64`) of `key` over `info`. */
export function signNarInfo(info: NarInfo, key: SecretKey): string {
  const signature = sign(
    null,
    Buffer.from(fingerprintNarInfo(info), 'utf8'),
    privateKeyObject(key),
  );
  return `${key.name}:${signature.toString('base64')}`;
}

/** `info` with the signature of `key`, replacing any signature by a key of the same name; sigs sorted as Nix writes them. */
export function withSignature(info: NarInfo, key: SecretKey): NarInfo {
  const others = info.sigs.filter((sig) => signatureKeyName(sig) !== key.name);
  const sigs = [...new Set([...others, signNarInfo(info, key)])].sort(compareBytes);
  return { ...info, sigs };
}

/** The first trusted key (in the order given) that has a valid signature on `info`. */
export function verifyNarInfo(info: NarInfo, trusted: readonly PublicKey[]): PublicKey | undefined {
  const fingerprint = Buffer.from(fingerprintNarInfo(info), 'utf8');
  for (const key of trusted) {
    for (const sig of info.sigs) {
      const parsed = splitSignature(sig);
      if (parsed?.keyName !== key.name) continue;
      if (verify(null, fingerprint, publicKeyObject(key), parsed.signature)) return key;
    }
  }
  return undefined;
}

/** Why `sig` is not `name:base64(64 bytes)`, or undefined when it is. */
export function signatureProblem(sig: string): string | undefined {
  const colon = sig.indexOf(':');
  if (colon < 0) return 'has no ":" between key name and signature';
  const nameProblem = keyNameProblem(sig.slice(0, colon));
  if (nameProblem !== undefined) return `is not valid: ${nameProblem}`;
  if (decodeBase64(sig.slice(colon + 1), SIGNATURE_BYTES) === undefined) {
    return `is not valid: the signature is not base64 of ${SIGNATURE_BYTES} bytes`;
  }
  return undefined;
}

export async function readSecretKeyFile(path: string): Promise<SecretKey> {
  return parseKeyFileText(path, await readKeyFile(path, 'secret'), parseSecretKey);
}

export async function readPublicKeyFile(path: string): Promise<PublicKey> {
  return parseKeyFileText(path, await readKeyFile(path, 'public'), parsePublicKey);
}

/** Creates `path` (never overwrites) with mode 0600 and no trailing newline, like Nix. */
export async function writeSecretKeyFile(path: string, key: SecretKey): Promise<void> {
  await writeNewFile(path, formatSecretKey(key), 0o600, 'write the secret key to');
}

/** Creates `path` (never overwrites) with mode 0644 and no trailing newline, like Nix. */
export async function writePublicKeyFile(path: string, key: PublicKey): Promise<void> {
  await writeNewFile(path, formatPublicKey(key), 0o644, 'write the public key to');
}

function checkKeyName(name: string): void {
  const problem = keyNameProblem(name);
  if (problem !== undefined) {
    throw firnError(
      'FIRN_E_KEY_INVALID',
      `${quoteForMessage(name)} cannot name a key: ${problem}`,
      {
        hint: 'use a name like cache.example.org-1',
      },
    );
  }
}

function splitKey(
  text: string,
  size: number,
  kind: 'secret' | 'public',
): { name: string; bytes: Buffer } {
  const trimmed = text.replace(/\s+$/, '');
  const colon = trimmed.indexOf(':');
  const hint = `a ${kind} key looks like name:base64 (as written by nix-store --generate-binary-cache-key)`;
  // Never quote the text of a secret key: it may be the key itself.
  if (colon < 0)
    throw firnError('FIRN_E_KEY_INVALID', `the ${kind} key has no ":" after its name`, { hint });
  const name = trimmed.slice(0, colon);
  const nameProblem = keyNameProblem(name);
  if (nameProblem !== undefined) {
    throw firnError('FIRN_E_KEY_INVALID', `the ${kind} key is not valid: ${nameProblem}`, { hint });
  }
  const bytes = decodeBase64(trimmed.slice(colon + 1), size);
  if (bytes === undefined) {
    throw firnError(
      'FIRN_E_KEY_INVALID',
      `${kind} key '${name}' is not valid: it is not base64 of ${size} bytes`,
      { hint },
    );
  }
  return { name, bytes };
}

function splitSignature(sig: string): { keyName: string; signature: Buffer } | undefined {
  const colon = sig.indexOf(':');
  if (colon <= 0) return undefined;
  const signature = decodeBase64(sig.slice(colon + 1), SIGNATURE_BYTES);
  return signature === undefined ? undefined : { keyName: sig.slice(0, colon), signature };
}

function signatureKeyName(sig: string): string {
  const colon = sig.indexOf(':');
  return colon < 0 ? sig : sig.slice(0, colon);
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Strict base64 of exactly `size` bytes (padding optional, as Nix's decoder allows); undefined otherwise. */
function decodeBase64(text: string, size: number): Buffer | undefined {
  if (!BASE64.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64');
  if (bytes.length !== size) return undefined;
  if (bytes.toString('base64').replace(/=+$/, '') !== text.replace(/=+$/, '')) return undefined;
  return bytes;
}

function derivePublicKey(seed: Buffer): Buffer {
  const jwk = createPublicKey(privateKeyFromSeed(seed, undefined)).export({ format: 'jwk' });
  if (jwk.x === undefined) throw new Error('ed25519 JWK export lacks x');
  return Buffer.from(jwk.x, 'base64url');
}

const privateKeys = new WeakMap<SecretKey, KeyObject>();
const publicKeys = new WeakMap<PublicKey, KeyObject>();

function privateKeyObject(key: SecretKey): KeyObject {
  let object = privateKeys.get(key);
  if (object === undefined) {
    object = privateKeyFromSeed(key.seed, key.publicKey);
    privateKeys.set(key, object);
  }
  return object;
}

function publicKeyObject(key: PublicKey): KeyObject {
  let object = publicKeys.get(key);
  if (object === undefined) {
    object = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: key.key.toString('base64url') },
      format: 'jwk',
    });
    publicKeys.set(key, object);
  }
  return object;
}

/** node:crypto wants `x` in a private JWK but derives the public key from `d` alone. */
function privateKeyFromSeed(seed: Buffer, publicKey: Buffer | undefined): KeyObject {
  if (seed.length !== SEED_BYTES) throw new Error(`ed25519 seed of ${seed.length} bytes`);
  const x = (publicKey ?? Buffer.alloc(PUBLIC_KEY_BYTES)).toString('base64url');
  return createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', d: seed.toString('base64url'), x },
    format: 'jwk',
  });
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

async function readKeyFile(path: string, kind: 'secret' | 'public'): Promise<string> {
  const action = `read the ${kind} key file`;
  try {
    const handle = await open(path, 'r');
    try {
      const buffer = Buffer.alloc(MAX_KEY_FILE_BYTES + 1);
      let length = 0;
      while (length < buffer.length) {
        const { bytesRead } = await handle.read(buffer, length, buffer.length - length);
        if (bytesRead === 0) break;
        length += bytesRead;
      }
      if (length > MAX_KEY_FILE_BYTES) {
        throw firnError('FIRN_E_KEY_INVALID', `${path} is too large to be a ${kind} key file`);
      }
      return buffer.subarray(0, length).toString('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (FirnError.is(error)) throw error;
    throw fromFsError(error, path, action);
  }
}

function parseKeyFileText<K>(path: string, text: string, parse: (text: string) => K): K {
  try {
    return parse(text);
  } catch (error) {
    if (FirnError.is(error) && error.code === 'FIRN_E_KEY_INVALID') {
      throw firnError('FIRN_E_KEY_INVALID', `${path}: ${error.message}`, {
        cause: error,
        hint: 'the file should hold one key as name:base64, as nix-store --generate-binary-cache-key writes it',
      });
    }
    throw error;
  }
}

async function writeNewFile(
  path: string,
  text: string,
  mode: number,
  action: string,
): Promise<void> {
  try {
    await writeFile(path, text, { flag: 'wx', mode });
  } catch (error) {
    throw fromFsError(error, path, action);
  }
}

/**
 * Upload material for cache tests made in-process: random store paths, their NARs (a single
 * regular file), compressed as Nix would, and the unsigned narinfo `nix copy` would PUT. Plus
 * small HTTP helpers: PUT with a token, and raw requests whose path Node does not normalise.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { zstdCompressSync } from 'node:zlib';
import { narExtension, type Compression } from '../../src/cache/compression.ts';
import type { Hash } from '../../src/nix/hash.ts';
import { encodeStrings } from '../../src/nix/nar-format.ts';
import { serializeNarInfo, type NarInfo } from '../../src/nix/narinfo.ts';
import { NIX32_ALPHABET, encodeNix32 } from '../../src/nix/nix-base32.ts';

export interface Fixture {
  /** `<hash>-<name>` */
  readonly baseName: string;
  readonly storePath: string;
  readonly hashPart: string;
  /** The NAR itself. */
  readonly nar: Buffer;
  /** The NAR as uploaded (compressed). */
  readonly file: Buffer;
  /** `<file hash>.nar[.zst|.xz]`, the name under `nar/`. */
  readonly fileName: string;
  readonly compression: Compression;
  readonly info: NarInfo;
  /** The narinfo text as `nix copy` PUTs it (no signature). */
  readonly narinfo: string;
}

export function randomHashPart(): string {
  return Array.from(randomBytes(32), (byte) => NIX32_ALPHABET[byte % 32]).join('');
}

export function sha256(data: Uint8Array): Hash {
  return { algorithm: 'sha256', digest: createHash('sha256').update(data).digest() };
}

/** The NAR of a single regular file. */
export function fileNar(contents: Uint8Array, executable = false): Buffer {
  return Buffer.concat([
    encodeStrings('nix-archive-1', '(', 'type', 'regular'),
    executable ? encodeStrings('executable', '') : Buffer.alloc(0),
    encodeStrings('contents', contents, ')'),
  ]);
}

export function compress(nar: Buffer, compression: Compression): Buffer {
  switch (compression) {
    case 'none':
      return nar;
    case 'zstd':
      return zstdCompressSync(nar);
    case 'xz':
      return execFileSync('xz', ['-c', '-T1'], { input: nar, maxBuffer: 1 << 30 });
    default:
      throw new Error(`fixtures do not make ${compression}`);
  }
}

/** A fixture for an existing NAR (from `nix-store --dump`, say) at `storePath`. */
export function fixtureFromNar(
  nar: Buffer,
  options: {
    storePath: string;
    compression?: Compression;
    references?: readonly string[];
    deriver?: string;
  },
): Fixture {
  const compression = options.compression ?? 'zstd';
  const file = compress(nar, compression);
  const fileHash = sha256(file);
  const fileName = `${encodeNix32(fileHash.digest)}${narExtension(compression)}`;
  const baseName = options.storePath.slice('/nix/store/'.length);
  const info: NarInfo = {
    storePath: options.storePath,
    url: `nar/${fileName}`,
    compression,
    fileHash,
    fileSize: file.length,
    narHash: sha256(nar),
    narSize: nar.length,
    references: [...(options.references ?? [])].sort(),
    ...(options.deriver === undefined ? {} : { deriver: options.deriver }),
    sigs: [],
  };
  return {
    baseName,
    storePath: options.storePath,
    hashPart: baseName.slice(0, 32),
    nar,
    file,
    fileName,
    compression,
    info,
    narinfo: serializeNarInfo(info),
  };
}

/** A new random store path whose NAR is one file of `size` random bytes. */
export function makeFixture(
  options: {
    name?: string;
    size?: number;
    compression?: Compression;
    /** Base names of referenced paths; include the path's own base name via `self: true`. */
    references?: readonly string[];
    self?: boolean;
  } = {},
): Fixture {
  const hashPart = randomHashPart();
  const baseName = `${hashPart}-${options.name ?? 'fixture'}`;
  const references = [...(options.references ?? []), ...(options.self === true ? [baseName] : [])];
  return fixtureFromNar(fileNar(randomBytes(options.size ?? 1000)), {
    storePath: `/nix/store/${baseName}`,
    compression: options.compression ?? 'zstd',
    references,
    deriver: `${randomHashPart()}-${options.name ?? 'fixture'}.drv`,
  });
}

/** Replaces the value of the narinfo line `field` (the line must exist). */
export function withField(narinfo: string, field: string, value: string): string {
  const line = new RegExp(`^${field}: .*$`, 'm');
  if (!line.test(narinfo)) throw new Error(`no ${field} line in narinfo`);
  return narinfo.replace(line, `${field}: ${value}`);
}

export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

export function basicAuth(token: string, user = 'firn'): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${user}:${token}`).toString('base64')}` };
}

export function put(
  baseUrl: string,
  path: string,
  body: Uint8Array | string,
  token: string | undefined,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${baseUrl}${path}`, {
    method: 'PUT',
    body,
    headers: { ...(token === undefined ? {} : bearer(token)), ...headers },
  });
}

/** PUTs the NAR, then the narinfo, as `nix copy` does; returns both statuses. */
export async function upload(
  baseUrl: string,
  token: string,
  fixture: Fixture,
): Promise<{ nar: number; narinfo: number; narinfoBody: string }> {
  const nar = await put(baseUrl, `/nar/${fixture.fileName}`, fixture.file, token);
  await nar.arrayBuffer();
  const narinfo = await put(baseUrl, `/${fixture.hashPart}.narinfo`, fixture.narinfo, token);
  return { nar: nar.status, narinfo: narinfo.status, narinfoBody: await narinfo.text() };
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

/** One request with `path` sent exactly as given (fetch would resolve `..` and `%2e`). */
export function rawRequest(
  port: number,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: Uint8Array | string } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method, path, headers: options.headers ?? {}, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

export async function stats(
  baseUrl: string,
): Promise<{ paths: number; nars: number; narBytes: number }> {
  const response = await fetch(`${baseUrl}/api/v1/stats`);
  if (!response.ok) throw new Error(`stats: ${response.status}`);
  const all = (await response.json()) as { paths: number; nars: number; narBytes: number };
  return { paths: all.paths, nars: all.nars, narBytes: all.narBytes };
}

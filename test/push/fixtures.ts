/**
 * Shared pieces of the push tests: tiny derivations built by the real Nix in a chroot store
 * (random salt, so every run makes paths no cache has seen), the cache's access log read back
 * as requests, and questions to the cache about what it holds.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NixEnv } from '../helpers/nix.ts';

/** A chroot store builds in a chroot: give /bin/sh, coreutils and their libraries to the builder. */
export const SANDBOX_PATHS = ['/bin', '/usr', '/lib', '/lib64'].filter((path) => existsSync(path));

/**
 * The `mk name script` binding every test expression builds with: a salted derivation run by
 * /bin/sh with coreutils, no nixpkgs. Expressions that use it take a `salt` argument.
 */
export const MK_DERIVATION = `mk = name: script: derivation {
    inherit name salt;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };`;

/**
 * `top` ← `mid`s ← `lib`, plus `blobs` of random bytes that `top` references, and `extra` small
 * independent paths. Every builder prints a line, so each has a build log.
 */
const EXPRESSION = `{ salt, mids, blobs, blobBytes, extra, blobText ? false }:
let
  ${MK_DERIVATION}
  lib = mk "lib" "echo building lib $salt; echo lib $salt > $out";
  mid = i: mk "mid-\${toString i}" ''
    echo building mid \${toString i}
    mkdir -p $out/bin
    echo \${lib} > $out/lib-ref
    echo \${toString i} > $out/index
    printf '#!/bin/sh\\necho mid\\n' > $out/bin/run
    chmod +x $out/bin/run
    ln -s lib-ref $out/link
  '';
  # Random bytes, or their base64 (compressible by about a quarter, like much real data).
  blob = i: mk "blob-\${toString i}" (if blobText
    then "echo building blob; head -c \${toString blobBytes} /dev/urandom | base64 -w 76 | head -c \${toString blobBytes} > $out"
    else "echo building blob; head -c \${toString blobBytes} /dev/urandom > $out");
  midList = builtins.genList mid mids;
  blobList = builtins.genList blob blobs;
  extraList = builtins.genList (i: mk "extra-\${toString i}" "echo building extra; echo \${toString i} $salt > $out") extra;
in {
  top = mk "top" "echo building top; echo \${toString midList} \${toString blobList} > $out";
  extra = extraList;
}
`;

export interface Shape {
  readonly mids: number;
  readonly blobs: number;
  readonly blobBytes: number;
  readonly extra: number;
  /** Blobs of base64 text instead of random bytes: zstd shrinks them. */
  readonly blobText?: boolean;
}

export interface Built {
  readonly top: string;
  readonly extra: readonly string[];
  /** Every path of top's closure plus the extras. */
  readonly paths: readonly string[];
}

export async function buildShape(
  nix: NixEnv,
  options: {
    dir: string;
    store: string;
    salt: string;
    shape: Shape;
    extraArgs?: readonly string[];
  },
): Promise<Built> {
  const file = join(options.dir, `shape-${options.salt}.nix`);
  writeFileSync(file, EXPRESSION);
  const { shape } = options;
  const built = await nix.nix('nix-build', [
    '--store',
    options.store,
    '--no-out-link',
    file,
    '-A',
    'top',
    '-A',
    'extra',
    '--argstr',
    'salt',
    options.salt,
    '--arg',
    'mids',
    String(shape.mids),
    '--arg',
    'blobs',
    String(shape.blobs),
    '--arg',
    'blobBytes',
    String(shape.blobBytes),
    '--arg',
    'extra',
    String(shape.extra),
    '--arg',
    'blobText',
    shape.blobText === true ? 'true' : 'false',
    ...(options.extraArgs ?? []),
  ]);
  const outputs = built.stdout.toString('utf8').trim().split('\n');
  const top = outputs.find((path) => path.endsWith('-top'));
  if (top === undefined) throw new Error(`nix-build printed ${outputs.join(' ')}`);
  const extra = outputs.filter((path) => /-extra-\d+$/.test(path));
  const closure = await nix.nix('nix-store', ['--store', options.store, '-qR', top]);
  const paths = [...closure.stdout.toString('utf8').trim().split('\n'), ...extra].sort();
  return { top, extra, paths };
}

export interface Access {
  readonly method: string;
  readonly url: string;
  readonly status: number;
}

/** The requests in a firn serve JSON log. */
export function accesses(log: string): Access[] {
  const result: Access[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    const record = JSON.parse(line) as Partial<Access>;
    if (record.method !== undefined && record.url !== undefined && record.status !== undefined)
      result.push({ method: record.method, url: record.url, status: record.status });
  }
  return result;
}

/**
 * How many times each NAR file was sent and accepted: by a successful `PUT /nar/…` or as an
 * entry of a batch (`POST /api/v1/paths`, logged per entry with its NAR).
 */
export function narPuts(log: string): Map<string, number> {
  const counts = new Map<string, number>();
  const count = (url: string): void => {
    counts.set(url, (counts.get(url) ?? 0) + 1);
  };
  for (const access of accesses(log)) {
    if (access.method === 'PUT' && access.url.startsWith('/nar/') && access.status < 300)
      count(access.url);
  }
  for (const entry of batchEntries(log)) count(`/${entry.nar}`);
  return counts;
}

/** Store paths in the order the cache committed them, by PUT or batch. */
export function committedOrder(log: string): string[] {
  const order: string[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    const record = JSON.parse(line) as { msg?: string; storePath?: string; created?: boolean };
    if (record.msg === 'path added' && record.storePath !== undefined) order.push(record.storePath);
  }
  return order;
}

/** The entries of batch uploads the cache accepted (stored now or found there). */
export function batchEntries(log: string): { storePath: string; nar: string }[] {
  const entries: { storePath: string; nar: string }[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    const record = JSON.parse(line) as { entry?: number; storePath?: string; nar?: string };
    if (record.entry !== undefined && record.storePath !== undefined && record.nar !== undefined)
      entries.push({ storePath: record.storePath, nar: record.nar });
  }
  return entries;
}

export function hashPart(path: string): string {
  return path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
}

/** The hash parts of `paths` the cache at `url` lacks, from its bulk endpoint. */
export async function cacheMissing(url: string, paths: readonly string[]): Promise<string[]> {
  const response = await fetch(`${url}/api/v1/missing`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ hashes: paths.map(hashPart) }),
  });
  if (!response.ok) throw new Error(`missing query failed: ${response.status}`);
  return ((await response.json()) as { missing: string[] }).missing;
}

/** Substitutes `paths` from the cache into a fresh chroot store, trusting only the cache's key. */
export async function substitute(
  nix: NixEnv,
  options: { store: string; url: string; key: string; paths: readonly string[] },
): Promise<void> {
  await nix.nix('nix-store', [
    '--store',
    options.store,
    '--realise',
    ...options.paths,
    '--option',
    'substituters',
    options.url,
    '--option',
    'trusted-public-keys',
    options.key,
    '--option',
    'max-jobs',
    '0',
  ]);
}

export function writeExecutable(file: string, text: string): void {
  writeFileSync(file, text, { mode: 0o755 });
}

/** Large paths of known content: compressible text, random noise, and spares to damage. */
const LARGE_PATHS = `{ salt }:
let
  ${MK_DERIVATION}
in rec {
  text = mk "text" "yes firn-$salt | head -c 3145728 > $out";
  noise = mk "noise" "head -c 3145728 /dev/urandom > $out";
  damaged = mk "damaged" "head -c 3145728 /dev/urandom > $out";
  grown = mk "grown" "head -c 2097152 /dev/urandom > $out";
  damagedText = mk "damagedText" "yes damaged-$salt | head -c 3145728 > $out";
}
`;

const LARGE_NAMES = ['text', 'noise', 'damaged', 'grown', 'damagedText'] as const;
export type LargeName = (typeof LARGE_NAMES)[number];

/** Builds LARGE_PATHS (fresh salt) in the chroot store; their store paths by name. */
export async function buildLargePaths(
  nix: NixEnv,
  options: { dir: string; store: string },
): Promise<Record<LargeName, string>> {
  const file = join(options.dir, 'large.nix');
  writeFileSync(file, LARGE_PATHS);
  const built = await nix.nix('nix-build', [
    '--store',
    options.store,
    '--no-out-link',
    file,
    '--argstr',
    'salt',
    randomUUID(),
    ...LARGE_NAMES.flatMap((name) => ['-A', name]),
  ]);
  const outputs = built.stdout.toString('utf8').trim().split('\n');
  const pick = (name: LargeName): string => {
    const path = outputs.find((output) => output.endsWith(`-${name}`));
    if (path === undefined) throw new Error(`nix-build printed ${outputs.join(' ')}`);
    return path;
  };
  return Object.fromEntries(LARGE_NAMES.map((name) => [name, pick(name)])) as Record<
    LargeName,
    string
  >;
}

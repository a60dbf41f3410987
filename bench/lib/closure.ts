/**
 * The test data: a closure of many small store paths plus one large path, and a separate huge
 * path, built by the real Nix in a chroot store. Every derivation carries a random salt, so each
 * run makes paths no cache has seen.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MK_DERIVATION } from '../../test/push/fixtures.ts';
import { mustRun } from './procs.ts';

export interface Sizes {
  /** How many small paths (a few hundred bytes to a few KiB each). */
  readonly smallPaths: number;
  readonly largeBytes: number;
  readonly hugeBytes: number;
}

export interface Closure {
  readonly store: string;
  /** The root whose closure is all small paths and the large one. */
  readonly root: string;
  readonly large: string;
  readonly huge: string;
  /** Every path of the root's closure. */
  readonly paths: readonly string[];
}

const EXPRESSION = `{ salt, small, largeBytes, hugeBytes }:
let
  ${MK_DERIVATION}
  mod = a: b: a - (a / b) * b;
  # Chains of ten, so narinfos carry references and uploads must go in order.
  smallAt = i:
    let prev = if mod i 10 == 0 then "" else smallAt (i - 1);
    in mk "small-\${toString i}" ''
      {
        echo "\${salt} \${toString i} \${prev}"
        n=0
        while [ $n -lt \${toString (4 + mod (i * 37) 90)} ]; do
          echo "line $n of small path \${toString i}: \${salt}"
          n=$((n + 1))
        done
      } > $out
    '';
  smalls = builtins.genList smallAt small;
  # Random bytes: a NAR that zstd cannot shrink, as most large binaries nearly are.
  large = mk "bench-large" "head -c \${toString largeBytes} /dev/urandom > $out";
  # A 16 MiB random block repeated: as incompressible (zstd's window is smaller) but quick to make.
  huge = mk "bench-huge" ''
    head -c 16777216 /dev/urandom > block
    n=0
    while [ $n -lt \${toString (hugeBytes / 16777216)} ]; do cat block; n=$((n + 1)); done > $out
  '';
in {
  root = mk "bench-root" "echo \${toString smalls} \${large} > $out";
  inherit huge;
}
`;

export async function buildClosure(options: {
  dir: string;
  env: NodeJS.ProcessEnv;
  salt: string;
  sizes: Sizes;
}): Promise<Closure> {
  const { dir, env, sizes } = options;
  const store = join(dir, 'store');
  const expr = join(dir, 'closure.nix');
  writeFileSync(expr, EXPRESSION);
  const built = await mustRun(
    'nix-build',
    [
      '--store',
      store,
      '--no-out-link',
      '--max-jobs',
      '4',
      expr,
      '-A',
      'root',
      '-A',
      'huge',
      '--argstr',
      'salt',
      options.salt,
      '--arg',
      'small',
      String(sizes.smallPaths),
      '--arg',
      'largeBytes',
      String(sizes.largeBytes),
      '--arg',
      'hugeBytes',
      String(sizes.hugeBytes),
    ],
    env,
  );
  const outputs = built.stdout.trim().split('\n');
  const root = outputs.find((path) => path.endsWith('-bench-root'));
  const huge = outputs.find((path) => path.endsWith('-bench-huge'));
  if (root === undefined || huge === undefined)
    throw new Error(`nix-build printed ${built.stdout}`);
  const info = await mustRun('nix', ['path-info', '--store', store, '--recursive', root], env);
  const paths = info.stdout.trim().split('\n');
  const large = paths.find((path) => path.endsWith('-bench-large'));
  if (large === undefined) throw new Error(`the closure of ${root} lacks the large path`);
  return { store, root, large, huge, paths };
}

/** The store path's hash part, which names its narinfo. */
export function hashPart(storePath: string): string {
  return storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
}

/** Every narinfo a file:// cache directory holds, as URL paths. */
export function narinfoUrls(cacheDir: string): string[] {
  return readdirSync(cacheDir)
    .filter((name) => name.endsWith('.narinfo'))
    .map((name) => `/${name}`);
}

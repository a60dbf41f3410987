/**
 * Flake installables (`.#opi01`, `path:/src#packages.aarch64-linux.kernel`, `github:o/r#x`) →
 * derivation paths, in one evaluation by the installed `nix`. `nix build --dry-run --json`
 * instantiates every installable and answers in request order (`nix path-info --derivation`
 * sorts), which keeps firn's output lines in the order the user asked for them. Substituters
 * are switched off for this one command: a dry run would otherwise ask them about the whole
 * closure, which firn's own cache check does in bulk afterwards.
 */
import { firnError } from '../errors.ts';
import { run } from '../process/run.ts';
import { parseStorePath } from '../nix/store-path.ts';

/** A command-line word that names a derivation file rather than a flake installable. */
export function isDrvPath(word: string): boolean {
  if (!word.startsWith('/')) return false;
  try {
    return parseStorePath(word).name.endsWith('.drv');
  } catch {
    return false;
  }
}

export interface FlakeEvalOptions {
  /** Root of a chroot store (`--store DIR`). */
  readonly storeRoot?: string | undefined;
  readonly env?: NodeJS.ProcessEnv;
  readonly signal?: AbortSignal;
}

/** One `nix build --dry-run --json` over every installable; their drv paths in order. */
export async function evaluateFlakes(
  installables: readonly string[],
  options: FlakeEvalOptions = {},
): Promise<string[]> {
  if (installables.length === 0) return [];
  const args = [
    '--extra-experimental-features',
    'nix-command flakes',
    'build',
    '--dry-run',
    '--json',
    '--no-link',
    '--option',
    'substituters',
    '',
    ...(options.storeRoot === undefined ? [] : ['--store', options.storeRoot]),
    '--',
    ...installables,
  ];
  const result = await run('nix', args, {
    env: options.env ?? process.env,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  if (result.code !== 0) throw evalError(installables, result.stderr);
  return parseDryRun(result.stdout.toString('utf8'), installables);
}

/** `[{"drvPath": …, "outputs": {…}}, …]`, one entry per installable. */
export function parseDryRun(stdout: string, installables: readonly string[]): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    throw evalError(installables, `nix printed no JSON: ${stdout.slice(0, 200)}`);
  }
  if (!Array.isArray(parsed)) throw evalError(installables, 'nix printed JSON that is not a list');
  const paths: string[] = [];
  for (const entry of parsed as unknown[]) {
    const drvPath =
      typeof entry === 'object' && entry !== null
        ? (entry as { drvPath?: unknown }).drvPath
        : undefined;
    if (typeof drvPath !== 'string' || !isDrvPath(drvPath)) {
      throw evalError(
        installables,
        `an installable is not a derivation (got ${JSON.stringify(entry).slice(0, 200)}); ` +
          'store paths that are not .drv files are already built',
      );
    }
    paths.push(drvPath);
  }
  return paths;
}

function evalError(installables: readonly string[], stderr: string): Error {
  const tail = stderr.trim().split('\n').slice(-8).join('\n');
  const unsupported = /experimental Nix feature|unrecognised flag|unknown (command|flag)/i.test(
    stderr,
  );
  return firnError(
    'FIRN_E_BUILD_EVAL',
    `evaluating ${installables.join(' ')} failed${tail === '' ? '' : `:\n${tail}`}`,
    {
      hint: unsupported
        ? 'flake installables need Nix 2.4 or newer with flakes; use -f FILE -A ATTR or .drv paths with an older Nix'
        : 'check the flake reference and attribute (`nix flake show REF` lists them); the error above is from nix',
    },
  );
}

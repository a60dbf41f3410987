/**
 * What `firn hook` does inside Nix's build loop: queue the outputs and the derivation in the
 * spool and return. Nix waits for the hook and fails the build if it exits non-zero, so every
 * failure here is reported (stderr, which Nix shows, and the spool's hook.log) and swallowed:
 * a build that worked is never failed because the upload queue is broken.
 */
import { appendFileSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { enqueue, ensureDir, spoolDirs } from './spool.ts';
import { defaultSpoolDir, resolveSpoolDir } from './spool-dir.ts';

/**
 * The whole hook once its flags are read: find the spool (flag, FIRN_SPOOL, the config file,
 * the default), queue what Nix built, and never throw.
 */
export async function hook(options: {
  readonly flag?: string | undefined;
  readonly configFile?: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly stderr: Writable;
}): Promise<void> {
  const { env, stderr } = options;
  let spool: string | undefined;
  try {
    spool = await resolveSpoolDir({ flag: options.flag, env, configFile: options.configFile });
    runHook({ outPaths: env.OUT_PATHS, drvPath: env.DRV_PATH }, spool, stderr);
  } catch (error) {
    // Even a bad config must not fail the build that ran this hook. Its log goes to the spool
    // the environment names (or the default one): never to a made-up path in the cwd.
    nothingQueued(spool ?? fallbackSpool(env), stderr, error);
  }
}

/** Reports a failure before anything was queued (bad flags, config or spool). */
export function nothingQueued(spool: string, stderr: Writable, error: unknown): void {
  report(
    spool,
    stderr,
    `${error instanceof Error ? error.message : String(error)}; nothing was queued`,
  );
}

/** The spool when flags or the config file could not be read: FIRN_SPOOL, else the default. */
export function fallbackSpool(env: NodeJS.ProcessEnv): string {
  const fromEnv = env.FIRN_SPOOL;
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : defaultSpoolDir(env);
}

export interface HookInput {
  /** OUT_PATHS, space-separated, as Nix sets it. */
  readonly outPaths: string | undefined;
  /** DRV_PATH as Nix sets it. */
  readonly drvPath: string | undefined;
}

export function runHook(input: HookInput, spool: string, stderr: Writable): void {
  const outPaths = (input.outPaths ?? '').split(/\s+/).filter((path) => path !== '');
  const drvPath = input.drvPath === undefined || input.drvPath === '' ? undefined : input.drvPath;
  // Nix 2.8.0 leaves OUT_PATHS empty (NixOS/nix#6446): the drain reads the outputs from DRV_PATH.
  if (outPaths.length === 0 && drvPath === undefined) {
    report(
      spool,
      stderr,
      'OUT_PATHS and DRV_PATH are empty or unset: nothing to queue (is this run by Nix as post-build-hook?)',
    );
    return;
  }
  try {
    enqueue(spool, { version: 1, outPaths, drvPath, queuedAt: new Date().toISOString() });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const code = (error as { code?: unknown }).code;
    const what = outPaths.length > 0 ? outPaths.join(' ') : `the outputs of ${drvPath ?? ''}`;
    const later =
      outPaths.length > 0 ? outPaths.join(' ') : `$(nix-store -q --outputs ${drvPath ?? ''})`;
    report(
      spool,
      stderr,
      `could not queue ${what} for upload: ${reason}${typeof code === 'string' && code.startsWith('FIRN_E_') ? ` [${code}]` : ''}; the build itself succeeded; upload it later with: firn push ${later}`,
    );
  }
}

/** One line to stderr (Nix shows it with the build) and to hook.log, if that can be written. */
export function report(spool: string, stderr: Writable, message: string): void {
  const line = `firn hook: ${message}\n`;
  stderr.write(line);
  try {
    ensureDir(spool);
    appendFileSync(spoolDirs(spool).hookLog, `${new Date().toISOString()} ${line}`);
  } catch (error) {
    stderr.write(
      `firn hook: cannot write ${spoolDirs(spool).hookLog} either: ${(error as Error).message}\n`,
    );
  }
}

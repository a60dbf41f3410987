/**
 * What `firn hook` does inside Nix's build loop: queue the outputs and the derivation in the
 * spool and return. Nix waits for the hook and fails the build if it exits non-zero, so every
 * failure here is reported (stderr, which Nix shows, and the spool's hook.log) and swallowed:
 * a build that worked is never failed because the upload queue is broken.
 */
import { appendFileSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { enqueue, ensureDir, spoolDirs } from './spool.ts';

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

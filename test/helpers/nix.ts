/**
 * Running the real `nix` as the test oracle, isolated from the machine's own configuration:
 * its own NIX_CONF_DIR (no substituters, no sandbox, nix-command on), and optionally a chroot
 * store under a temp dir so tests never touch /nix.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runChecked, type RunResult } from '../../src/process/run.ts';

export interface NixEnv {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  /** Runs a nix command; throws with its stderr if it fails. */
  nix(command: string, args: readonly string[], input?: string | Uint8Array): Promise<RunResult>;
  /** Runs a nix command and returns the result whatever the exit code. */
  nixRaw(command: string, args: readonly string[], input?: string | Uint8Array): Promise<RunResult>;
  [Symbol.dispose](): void;
}

export function makeNixEnv(extraConf = ''): NixEnv {
  const dir = mkdtempSync(join(tmpdir(), 'firn-nix-'));
  const confDir = join(dir, 'conf');
  mkdirSync(confDir);
  writeFileSync(
    join(confDir, 'nix.conf'),
    [
      'experimental-features = nix-command',
      'substituters =',
      'sandbox = false',
      'build-users-group =',
      'narinfo-cache-negative-ttl = 0',
      extraConf,
    ].join('\n') + '\n',
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NIX_CONF_DIR: confDir,
    XDG_CACHE_HOME: join(dir, 'cache'),
    HOME: join(dir, 'home'),
  };
  delete env.NIX_REMOTE;
  return {
    dir,
    env,
    nix: (command, args, input) =>
      runChecked(command, args, input === undefined ? { env } : { env, input }),
    nixRaw: (command, args, input) =>
      run(command, args, input === undefined ? { env } : { env, input }),
    [Symbol.dispose]() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

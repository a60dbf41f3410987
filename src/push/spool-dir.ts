/**
 * Where the spool lives. Kept apart from the zod-based push config because `firn hook` runs
 * once per build and must start in milliseconds: this file needs only node:os and node:path,
 * and reads the TOML config file only when one was named.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * `/var/spool/firn` for root (where the nix-daemon runs the hook), else
 * `$XDG_STATE_HOME/firn/spool` or `~/.local/state/firn/spool`.
 */
export function defaultSpoolDir(env: NodeJS.ProcessEnv): string {
  if (process.getuid?.() === 0) return '/var/spool/firn';
  const state = env.XDG_STATE_HOME;
  return join(
    state !== undefined && state !== '' ? state : join(homedir(), '.local', 'state'),
    'firn',
    'spool',
  );
}

/** `--spool`, else FIRN_SPOOL, else `spool` in the config file's [push] table, else the default. */
export async function resolveSpoolDir(options: {
  flag?: string | undefined;
  env: NodeJS.ProcessEnv;
  configFile?: string | undefined;
}): Promise<string> {
  if (options.flag !== undefined && options.flag !== '') return options.flag;
  const fromEnv = options.env.FIRN_SPOOL;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const file = options.configFile ?? options.env.FIRN_CONFIG;
  if (file !== undefined && file !== '') {
    const spool = await spoolFromConfigFile(file);
    if (spool !== undefined) return spool;
  }
  return defaultSpoolDir(options.env);
}

async function spoolFromConfigFile(file: string): Promise<string | undefined> {
  const { parse } = await import('smol-toml');
  const parsed = parse(readFileSync(file, 'utf8'));
  const push = parsed.push;
  const table =
    push !== undefined && typeof push === 'object' && !Array.isArray(push) ? push : parsed;
  const spool = (table as Record<string, unknown>).spool;
  return typeof spool === 'string' && spool !== '' ? spool : undefined;
}

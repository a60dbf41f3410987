/**
 * `firn drv show DRV…`: reads `.drv` files directly (no Nix needed) and prints what
 * `nix show-derivation` prints for them, byte for byte.
 */
import { open, realpath } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { FirnError, firnError, fromFsError } from '../../errors.ts';
import {
  DEFAULT_MAX_DRV_BYTES,
  formatShowDerivation,
  parseDerivation,
  type Derivation,
} from '../../nix/derivation.ts';
import { DEFAULT_STORE_DIR } from '../../nix/store-path.ts';
import { dispatchSubcommand, parseCommandArgs, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';

const SHOW_HELP: CommandHelp = {
  usage: 'firn drv show [--store-dir DIR] DRV_PATH…',
  description:
    'Print the derivations as one JSON object keyed by store path, exactly as\n' +
    '`nix show-derivation DRV_PATH…` does (Nix 2.8), reading the .drv files directly.\n' +
    'A symlink to a derivation (such as a GC root) is followed.',
  options: ['--store-dir DIR   the Nix store directory (default: $NIX_STORE_DIR or /nix/store)'],
  examples: [
    'firn drv show /nix/store/…-hello-2.12.drv',
    'firn drv show $(nix-instantiate default.nix) | jq .',
  ],
};

export function run(ctx: CommandContext): Promise<number> {
  return dispatchSubcommand(
    ctx,
    { usage: 'firn drv COMMAND', description: 'Read Nix store derivations (.drv files).' },
    { show: { summary: 'print derivations as JSON like `nix show-derivation`', run: show } },
  );
}

async function show(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    SHOW_HELP,
    { 'store-dir': { type: 'string' } },
    { min: 1, max: Infinity },
  );
  if (!args) return 0;
  const storeDir = resolve(args.values['store-dir'] ?? ctx.env.NIX_STORE_DIR ?? DEFAULT_STORE_DIR);
  const derivations: [string, Derivation][] = [];
  for (const arg of args.positionals) {
    const path = await drvPathOf(arg, storeDir);
    const bytes = await readBounded(path, DEFAULT_MAX_DRV_BYTES);
    derivations.push([path, withPath(path, () => parseDerivation(bytes, { storeDir }))]);
  }
  ctx.stdout.write(formatShowDerivation(derivations));
  return 0;
}

/** The store path to key the output by: the argument itself, or where its symlinks lead. */
async function drvPathOf(arg: string, storeDir: string): Promise<string> {
  const absolute = resolve(arg);
  if (dirname(absolute) === storeDir) return absolute;
  try {
    return await realpath(absolute);
  } catch (error) {
    throw fromFsError(error, arg, 'read');
  }
}

/** Reads at most `maxBytes`, so a huge file or a device never fills memory. */
async function readBounded(path: string, maxBytes: number): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw fromFsError(error, path, 'read');
  }
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(256 * 1024);
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > maxBytes) {
        throw firnError(
          'FIRN_E_DRV_INVALID',
          `${path}: invalid derivation at byte ${maxBytes}: the derivation is larger than the limit of ${maxBytes} bytes`,
          { details: { path, offset: maxBytes, limit: maxBytes } },
        );
      }
      chunks.push(chunk.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks, total);
  } catch (error) {
    if (FirnError.is(error)) throw error;
    throw fromFsError(error, path, 'read');
  } finally {
    await handle.close();
  }
}

/** Names the file in a parse error, which knows only the offset. */
function withPath<T>(path: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (!FirnError.is(error)) throw error;
    throw firnError(error.code, `${path}: ${error.message}`, {
      cause: error,
      details: { path, ...error.details },
      hint: error.hint ?? 'is this a .drv file written by Nix?',
    });
  }
}

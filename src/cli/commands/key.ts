/**
 * `firn key generate` and `firn key public`: ed25519 signing keys in Nix's own file format, so
 * keys made here work with `nix store sign -k` and in `trusted-public-keys`, and keys made by
 * `nix-store --generate-binary-cache-key` work here.
 */
import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  formatPublicKey,
  generateSecretKey,
  publicKeyOf,
  readSecretKeyFile,
  writePublicKeyFile,
  writeSecretKeyFile,
} from '../../nix/signing.ts';
import { dispatchSubcommand, parseCommandArgs, usageError, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';

const GENERATE_HELP: CommandHelp = {
  usage: 'firn key generate NAME --secret-out FILE --public-out FILE',
  description:
    'Make a new ed25519 signing key named NAME, as `nix-store --generate-binary-cache-key`\n' +
    'does: the secret key goes to a new file with mode 0600, the public key (the text for\n' +
    'trusted-public-keys) to another. Existing files are never overwritten.',
  options: [
    '--secret-out FILE   where to write the secret key (must not exist)',
    '--public-out FILE   where to write the public key (must not exist)',
  ],
  examples: [
    'firn key generate cache.example.org-1 --secret-out cache.secret --public-out cache.public',
  ],
};

const PUBLIC_HELP: CommandHelp = {
  usage: 'firn key public SECRET_FILE',
  description:
    'Print the public key of a secret key file (made by firn or by Nix), the line to put\n' +
    'in trusted-public-keys, like `nix key convert-secret-to-public`.',
  examples: ['firn key public /var/lib/firn/keys/cache.secret'],
};

export function run(ctx: CommandContext): Promise<number> {
  return dispatchSubcommand(
    ctx,
    {
      usage: 'firn key COMMAND',
      description: 'Make and inspect ed25519 signing keys (Nix format).',
    },
    {
      generate: { summary: 'make a new secret and public key pair', run: generate },
      public: { summary: 'print the public key of a secret key file', run: printPublic },
    },
  );
}

async function generate(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    GENERATE_HELP,
    { 'secret-out': { type: 'string' }, 'public-out': { type: 'string' } },
    { min: 1, max: 1 },
  );
  if (!args) return 0;
  const [name = ''] = args.positionals;
  const secretOut = args.values['secret-out'];
  const publicOut = args.values['public-out'];
  if (secretOut === undefined) throw usageError(GENERATE_HELP, '--secret-out FILE is required');
  if (publicOut === undefined) throw usageError(GENERATE_HELP, '--public-out FILE is required');
  if (resolve(secretOut) === resolve(publicOut)) {
    throw usageError(GENERATE_HELP, '--secret-out and --public-out name the same file');
  }
  const key = generateSecretKey(name);
  await writeSecretKeyFile(secretOut, key);
  try {
    await writePublicKeyFile(publicOut, publicKeyOf(key));
  } catch (error) {
    // We created the secret file a moment ago, so removing it loses nothing.
    await rm(secretOut, { force: true });
    throw error;
  }
  ctx.stderr.write(`wrote secret key to ${secretOut} and public key to ${publicOut}\n`);
  return 0;
}

async function printPublic(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(ctx, PUBLIC_HELP, {}, { min: 1, max: 1 });
  if (!args) return 0;
  const [file = ''] = args.positionals;
  const key = await readSecretKeyFile(file);
  ctx.stdout.write(`${formatPublicKey(publicKeyOf(key))}\n`);
  return 0;
}

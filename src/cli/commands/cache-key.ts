import { keyPaths } from '../../cache/signing-key.ts';
import { FirnError, firnError } from '../../errors.ts';
import { formatPublicKey, publicKeyOf, readSecretKeyFile } from '../../nix/signing.ts';
import { parseCommandArgs, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';
import { DATA_OPTION_HELP, resolveDataDir } from '../data-dir.ts';

const help: CommandHelp = {
  usage: 'firn cache key [--data DIR]',
  description:
    "Print the cache's public key, the line clients put in trusted-public-keys. The key is made by the first `firn serve`.",
  options: [DATA_OPTION_HELP],
};

export async function run(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(ctx, help, { data: { type: 'string' } }, { min: 0, max: 0 });
  if (args === undefined) return 0;
  const dataDir = resolveDataDir(args.values.data, ctx.env);
  const file = keyPaths(dataDir).secret;
  let key;
  try {
    key = await readSecretKeyFile(file);
  } catch (error) {
    if (!FirnError.is(error) || error.code !== 'FIRN_E_FILE_NOT_FOUND') throw error;
    throw firnError('FIRN_E_FILE_NOT_FOUND', `the cache has no key yet: ${file} does not exist`, {
      cause: error,
      hint: `start the cache once (firn serve --data ${dataDir}) to create its key`,
    });
  }
  ctx.stdout.write(formatPublicKey(publicKeyOf(key)) + '\n');
  return 0;
}

/**
 * `firn hook`: Nix's post-build-hook. Kept to the lightest imports there are (no zod, no
 * fastify, no crypto): it runs once per build, inside Nix's build loop. Without arguments (as
 * Nix runs it) bin/firn skips the CLI and goes to src/cli/hook-entry.ts.
 */
import { parseCommandArgs, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';
import { fallbackSpool, hook, nothingQueued } from '../../push/hook.ts';

const help: CommandHelp = {
  usage: 'firn hook [--spool DIR] [--config FILE]',
  description: [
    "Nix's post-build-hook: queue the paths a build made (OUT_PATHS) and its derivation (DRV_PATH, whose",
    'log is uploaded too) in the spool, and return at once; `firn drain` uploads them. Always exits 0, so a',
    'build never fails because of the upload queue: problems are reported on stderr and in <spool>/hook.log.',
  ].join('\n'),
  options: [
    '--spool DIR     the spool directory (default: FIRN_SPOOL, then `spool` in the config file,',
    '                then /var/spool/firn for root or ~/.local/state/firn/spool)',
    '--config FILE   TOML config file with a [push] table (default: FIRN_CONFIG)',
  ],
  examples: [
    'nix.conf:  post-build-hook = /run/current-system/sw/bin/firn-hook   (a script running `firn hook`)',
  ],
};

const options = { spool: { type: 'string' }, config: { type: 'string' } } as const;

export async function run(ctx: CommandContext): Promise<number> {
  let values;
  try {
    const args = parseCommandArgs(ctx, help, options, { min: 0, max: 0 });
    if (args === undefined) return 0;
    values = args.values;
  } catch (error) {
    // A bad flag must not fail the build that ran this hook either.
    nothingQueued(fallbackSpool(ctx.env), ctx.stderr, error);
    return 0;
  }
  await hook({ flag: values.spool, configFile: values.config, env: ctx.env, stderr: ctx.stderr });
  return 0;
}

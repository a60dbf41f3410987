/**
 * `firn hook`: Nix's post-build-hook. Kept to the lightest imports there are (no zod, no
 * fastify, no crypto): it runs once per build, inside Nix's build loop.
 */
import { parseCommandArgs, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';
import { report, runHook } from '../../push/hook.ts';
import { defaultSpoolDir, resolveSpoolDir } from '../../push/spool-dir.ts';

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
  let spool: string | undefined;
  try {
    const args = parseCommandArgs(ctx, help, options, { min: 0, max: 0 });
    if (args === undefined) return 0;
    spool = await resolveSpoolDir({
      flag: args.values.spool,
      env: ctx.env,
      configFile: args.values.config,
    });
    runHook({ outPaths: ctx.env.OUT_PATHS, drvPath: ctx.env.DRV_PATH }, spool, ctx.stderr);
  } catch (error) {
    // Even a bad flag or config must not fail the build that ran this hook. Its log goes to the
    // spool the environment names (or the default one): never to a made-up path in the cwd.
    report(
      spool ?? fallbackSpool(ctx.env),
      ctx.stderr,
      `${error instanceof Error ? error.message : String(error)}; nothing was queued`,
    );
  }
  return 0;
}

/** The spool when flags or the config file could not be read: FIRN_SPOOL, else the default. */
function fallbackSpool(env: NodeJS.ProcessEnv): string {
  const fromEnv = env.FIRN_SPOOL;
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : defaultSpoolDir(env);
}

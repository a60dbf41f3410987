import { openStorage } from '../../cache/cache.ts';
import { enableGcPacing } from '../../cache/gc-pacing.ts';
import { verifyCache } from '../../cache/verify.ts';
import { formatBytes } from '../../config/sizes.ts';
import { parseCommandArgs, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';
import { DATA_OPTION_HELP, resolveDataDir } from '../data-dir.ts';

const help: CommandHelp = {
  usage: 'firn cache verify [--data DIR] [--json]',
  description:
    'Re-hash every stored NAR (as stored and decompressed) and report any that differ from the index.\nExits 1 if anything is corrupt.',
  options: [DATA_OPTION_HELP, '--json   print the report as JSON'],
};

export async function run(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    help,
    { data: { type: 'string' }, json: { type: 'boolean' } },
    { min: 0, max: 0 },
  );
  if (args === undefined) return 0;
  // `firn serve` may be running: open without repairing, so its uploads in flight survive.
  const cache = await openStorage(resolveDataDir(args.values.data, ctx.env));
  // Every blob streams through short-lived buffers: collect them as they go.
  enableGcPacing();
  try {
    const tty = (ctx.stderr as { isTTY?: boolean }).isTTY === true && args.values.json !== true;
    const report = await verifyCache(cache.index, cache.blobs, (done, total) => {
      if (tty) ctx.stderr.write(`\rverifying ${done}/${total}`);
    });
    if (tty) ctx.stderr.write('\n');
    if (args.values.json === true) {
      ctx.stdout.write(JSON.stringify(report) + '\n');
    } else {
      for (const problem of report.problems)
        ctx.stdout.write(`CORRUPT ${problem.key}: ${problem.problem}\n`);
      ctx.stderr.write(
        `checked ${report.checked} NAR files (${formatBytes(report.bytes)}): ${report.problems.length === 0 ? 'all good' : `${report.problems.length} problems`}\n`,
      );
    }
    return report.problems.length === 0 ? 0 : 1;
  } finally {
    await cache.close();
  }
}

import { openStorage } from '../../cache/cache.ts';
import { collectGarbage } from '../../cache/gc.ts';
import { formatBytes, parseDuration, parseSize } from '../../config/sizes.ts';
import { parseCommandArgs, usageError, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';
import { DATA_OPTION_HELP, resolveDataDir } from '../data-dir.ts';

const help: CommandHelp = {
  usage:
    'firn cache gc (--max-size SIZE | --older-than DURATION) [--data DIR] [--dry-run] [--json]',
  description:
    'Evict least recently used paths whole until the cache fits. A path that a kept path references is never\n' +
    'evicted (closures stay complete); a narinfo is removed before its NAR. Safe while `firn serve` runs.',
  options: [
    DATA_OPTION_HELP,
    '--max-size SIZE         evict until stored NARs take at most SIZE (e.g. 200G)',
    '--older-than DURATION   evict paths not downloaded for DURATION (e.g. 30d)',
    '--dry-run               only report what would be evicted',
    '--json                  print the report as JSON',
  ],
  examples: ['firn cache gc --max-size 200G', 'firn cache gc --older-than 90d --dry-run'],
};

export async function run(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    help,
    {
      data: { type: 'string' },
      'max-size': { type: 'string' },
      'older-than': { type: 'string' },
      'dry-run': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    { min: 0, max: 0 },
  );
  if (args === undefined) return 0;
  const { values } = args;
  if (values['max-size'] === undefined && values['older-than'] === undefined)
    throw usageError(help, 'give --max-size or --older-than');
  const maxSize =
    values['max-size'] === undefined ? undefined : parseSize(values['max-size'], '--max-size');
  const olderThan =
    values['older-than'] === undefined
      ? undefined
      : parseDuration(values['older-than'], '--older-than');
  // `firn serve` may be running: open without repairing, so its uploads in flight survive.
  const cache = await openStorage(resolveDataDir(values.data, ctx.env));
  try {
    const report = await collectGarbage(cache.index, cache.blobs, {
      maxSize,
      olderThan,
      dryRun: values['dry-run'] === true,
    });
    if (values.json === true) {
      ctx.stdout.write(JSON.stringify(report) + '\n');
      return 0;
    }
    const verb = values['dry-run'] === true ? 'would evict' : 'evicted';
    for (const path of report.evictedPaths) ctx.stdout.write(`${verb} ${path}\n`);
    ctx.stderr.write(
      `${verb} ${report.evictedPaths.length} paths, ${report.removedNars} NAR files, ${formatBytes(report.freedBytes)}; ` +
        `${formatBytes(report.remainingBytes)} remain` +
        (report.keptForReferrers > 0
          ? `; kept ${report.keptForReferrers} old paths that newer paths reference`
          : '') +
        '\n',
    );
  } finally {
    await cache.close();
  }
  return 0;
}

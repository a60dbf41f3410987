import { drainForever, drainOnce } from '../../push/drain.ts';
import { openPushSession } from '../../push/session.ts';
import { parseCommandArgs, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';
import { createPushReporter } from '../reporters/push-reporter.ts';
import { loadUploadConfig, UPLOAD_OPTIONS } from '../upload-options.ts';

const help: CommandHelp = {
  usage: 'firn drain [--once] [--cache URL] [--spool DIR] [options]',
  description: [
    'Upload what `firn hook` queued: the closures of the built paths (one bulk query, parallel',
    'uploads, retries with backoff) and their build logs. An entry leaves the spool only once the',
    'cache confirmed every path in it. Without --once, keeps running and waits for new entries',
    '(run it as a service); stop it with SIGTERM. A drain that was killed leaves nothing behind:',
    'the next one takes its entries back.',
  ].join('\n'),
  options: [
    '--once                 drain what is queued, then exit (non-zero if entries are left)',
    '--cache URL            the cache (FIRN_CACHE)',
    '--spool DIR            the spool (FIRN_SPOOL; default /var/spool/firn for root)',
    '--token-file FILE      a push token; else FIRN_TOKEN, else the netrc file Nix uses',
    '--json                 NDJSON events on stdout',
    '--jobs N               NARs uploaded at once (default 4)',
    '--batch-paths N        small paths per request to firn serve (default 1000; 0: one by one)',
    '--compression, --compression-level, --compress-min-size, --upstream: as for firn push',
    '--store DIR            root of a chroot store (as nix --store DIR)',
    '--poll-interval 5s     how often to look at the spool besides watching it',
    '--retries N            retries per request (default 5), --retry-delay 250ms',
    '--path-info MODE       auto|db|nix: the Nix database, or `nix path-info` (default auto)',
    '--config FILE          TOML config file ([push] table)',
  ],
  examples: [
    'firn drain --once --cache http://ser5:5000',
    'FIRN_CACHE=http://ser5:5000 firn drain',
  ],
};

const options = {
  ...UPLOAD_OPTIONS,
  once: { type: 'boolean' },
  spool: { type: 'string' },
  'poll-interval': { type: 'string' },
} as const;

export async function run(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(ctx, help, options, { min: 0, max: 0 });
  if (args === undefined) return 0;
  const { values } = args;
  const config = await loadUploadConfig(ctx, values, {
    spool: values.spool,
    'poll-interval': values['poll-interval'],
  });
  const reporter = createPushReporter({
    json: values.json === true,
    stdout: ctx.stdout,
    stderr: ctx.stderr,
    // A drain is a service: its output is a journal, not a terminal to redraw.
    progress: values.once === true,
  });
  const session = await openPushSession({
    config,
    env: ctx.env,
    tokenFileFlag: values['token-file'],
    onRetry: (event) => {
      reporter.emit({ event: 'retry', ...event });
    },
  });
  const stop = new AbortController();
  const onSignal = (): void => {
    stop.abort(new Error('stopped by a signal'));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const drainContext = {
    ...session,
    nar: { ...session.nar, onProgress: reporter.progress?.bind(reporter) },
    spool: config.spool,
    env: ctx.env,
    signal: stop.signal,
    emit: reporter.emit.bind(reporter),
  };
  try {
    if (values.once !== true) {
      await drainForever(drainContext, config.pollIntervalMs);
      return 0;
    }
    const summary = await drainOnce(drainContext);
    if (summary.error !== undefined && summary.left > 0) throw summary.error;
    return 0;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    reporter.close();
    session.close();
  }
}

import { tmpdir } from 'node:os';
import { firnError } from '../../errors.ts';
import { pushClosure, pushFailure } from '../../push/push.ts';
import { resolveStorePathArg } from '../../push/resolve-path.ts';
import { openPushSession } from '../../push/session.ts';
import { parseCommandArgs, usageError, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';
import { createPushReporter } from '../reporters/push-reporter.ts';
import { loadUploadConfig, UPLOAD_OPTIONS } from '../upload-options.ts';

const help: CommandHelp = {
  usage: 'firn push [--cache URL] [options] PATH… | --stdin',
  description: [
    'Upload store paths and their closures to a cache: one bulk query for what the cache lacks,',
    'several NARs at once, zstd, each narinfo only after its references. Paths already in the cache',
    '(or in an upstream cache) are skipped. Settings: flags, then FIRN_* variables, then the [push]',
    'table of the config file (--config or FIRN_CONFIG).',
  ].join('\n'),
  options: [
    '--cache URL            the cache (FIRN_CACHE)',
    '--token-file FILE      a push token; else FIRN_TOKEN, else the netrc file Nix uses',
    '--stdin                read paths from stdin, one per line',
    '--json                 NDJSON events on stdout instead of progress',
    '--no-progress          plain lines even on a terminal',
    '--jobs N               NARs uploaded at once (default 4)',
    '--batch-paths N        small paths per request to firn serve (default 1000; 0: one by one)',
    '--compression zstd|none, --compression-level N (1-19, default 3)',
    '--compress-min-size N  NARs under N bytes go uncompressed (default 4096; 0: always zstd)',
    '--upstream URL         skip paths this cache already serves (repeatable; FIRN_UPSTREAMS)',
    '--store DIR            root of a chroot store (as nix --store DIR)',
    '--retries N            retries per request (default 5), --retry-delay 250ms',
    '--path-info MODE       auto|db|nix: the Nix database, or `nix path-info` (default auto)',
    '--config FILE          TOML config file ([push] table)',
  ],
  examples: [
    'firn push --cache http://ser5:5000 ./result',
    'nix-store -qR ./result | firn push --stdin --json',
  ],
};

const options = {
  ...UPLOAD_OPTIONS,
  stdin: { type: 'boolean' },
  'no-progress': { type: 'boolean' },
} as const;

export async function run(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(ctx, help, options, { min: 0, max: Infinity });
  if (args === undefined) return 0;
  const { values } = args;
  const words = values.stdin === true ? await readPaths(ctx) : args.positionals;
  if (values.stdin === true && args.positionals.length > 0)
    throw usageError(help, 'give paths as arguments or with --stdin, not both');
  if (words.length === 0)
    throw usageError(help, values.stdin === true ? 'no paths on stdin' : 'missing argument');
  const config = await loadUploadConfig(ctx, values);
  const reporter = createPushReporter({
    json: values.json === true,
    stdout: ctx.stdout,
    stderr: ctx.stderr,
    progress: values['no-progress'] !== true,
  });
  const session = await openPushSession({
    config,
    env: ctx.env,
    tokenFileFlag: values['token-file'],
    onRetry: (event) => {
      reporter.emit({ event: 'retry', ...event });
    },
  });
  try {
    const roots = [...new Set(words.map((word) => resolveStorePathArg(word, session.store)))];
    const result = await pushClosure(roots, {
      ...session,
      nar: { ...session.nar, tmpDir: tmpdir(), onProgress: reporter.progress?.bind(reporter) },
      checkNarFirst: false,
      emit: (event) => {
        reporter.emit(event);
      },
    });
    const failure = pushFailure(result);
    if (failure !== undefined) throw failure;
    return 0;
  } finally {
    reporter.close();
    session.close();
  }
}

async function readPaths(ctx: CommandContext): Promise<string[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of ctx.stdin as AsyncIterable<Buffer | string>) {
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.includes('\0'))
    throw firnError('FIRN_E_USAGE', 'stdin holds a NUL byte; give one path per line');
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
}

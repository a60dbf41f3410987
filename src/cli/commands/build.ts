/**
 * `firn build`: evaluate once, read the .drv graph, skip what the cache has, and build the rest
 * over the fleet's builders, critical path first. The work is in src/build/; this file parses
 * flags and prints progress (plain lines on stderr, or NDJSON events on stdout with --json).
 */
import { join } from 'node:path';
import { defaultDataDir } from '../../config/serve-config.ts';
import { coordinate, instantiate, type BuildOutcome } from '../../build/coordinator.ts';
import { logTail, uploadBuildLog } from '../../build/build-log.ts';
import { SqliteDurations } from '../../build/durations.ts';
import { evaluateFlakes, isDrvPath } from '../../build/installables.ts';
import { LiveView, liveState } from '../../build/live-view.ts';
import type { SchedulerEvent } from '../../build/scheduler.ts';
import { firnError } from '../../errors.ts';
import { loadFleet, resolveFleetPath } from '../../fleet/inventory.ts';
import { parseCommandArgs, usageError, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';

const help: CommandHelp = {
  usage:
    'firn build --fleet FILE [-f FILE [-A ATTR]… [--arg NAME EXPR]… [--argstr NAME VALUE]…] [DRV… | FLAKE#ATTR…] [--json]',
  description: [
    'Build derivations over the fleet: each once, on a builder of the right system and features,',
    'longest remaining path first, with durations learned from earlier builds. Outputs the cache',
    'already has are not rebuilt; builders substitute their inputs from the cache and push their',
    'outputs to it. Prints the output paths, one a line.',
    '',
    'What to build: .drv paths; -f FILE with -A attributes (as nix-build); or flake installables',
    '(REF#ATTR, e.g. .#packages.aarch64-linux.kernel or',
    '.#nixosConfigurations.opi01.config.system.build.toplevel), evaluated once by the installed',
    'nix with flakes enabled (Nix 2.4 or newer).',
  ].join('\n'),
  options: [
    '--fleet FILE           the inventory (default: FIRN_FLEET, then ./firn.toml)',
    '-f, --file FILE        a Nix file to evaluate with nix-instantiate',
    '-A, --attr ATTR        an attribute of it (repeatable; a set builds all its derivations)',
    '--arg NAME EXPR        pass a Nix expression argument',
    '--argstr NAME VALUE    pass a string argument',
    '--store DIR            root of a chroot store (as nix --store DIR) holding the .drv files',
    '--history FILE         duration history (default: $XDG_STATE_HOME/firn/build-durations.sqlite)',
    '--no-cache-check       build even what the cache already has',
    '--json                 NDJSON events on stdout instead of progress lines',
    "FIRN_TOKEN             a cache token: private caches, and failed builds' logs go to /log/",
  ],
  examples: [
    'firn build --fleet firn.toml -f hosts.nix -A opi01 -A opi02 -A opi03',
    'firn build --fleet firn.toml .#nixosConfigurations.opi01.config.system.build.toplevel',
    'firn build /nix/store/…-linux-6.1.drv --json',
  ],
};

const options = {
  fleet: { type: 'string' },
  file: { type: 'string', short: 'f' },
  attr: { type: 'string', short: 'A', multiple: true },
  store: { type: 'string' },
  history: { type: 'string' },
  'no-cache-check': { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

/** `--arg NAME EXPR` and `--argstr NAME VALUE` take two words, which parseArgs cannot say. */
function takePairs(argv: readonly string[]): {
  rest: string[];
  args: [string, string][];
  argstrs: [string, string][];
} {
  const rest: string[] = [];
  const args: [string, string][] = [];
  const argstrs: [string, string][] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i] ?? '';
    if (word === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    if (word === '--arg' || word === '--argstr') {
      const name = argv[i + 1];
      const value = argv[i + 2];
      if (name === undefined || value === undefined)
        throw usageError(help, `${word} takes a name and a value`);
      (word === '--arg' ? args : argstrs).push([name, value]);
      i += 2;
      continue;
    }
    rest.push(word);
  }
  return { rest, args, argstrs };
}

export async function run(ctx: CommandContext): Promise<number> {
  const pairs = takePairs(ctx.argv);
  const parsed = parseCommandArgs({ ...ctx, argv: pairs.rest }, help, options, {
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
  });
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  const storeRoot = values.store;
  const json = values.json === true;
  if (
    values.file === undefined &&
    (values.attr !== undefined || pairs.args.length + pairs.argstrs.length > 0)
  ) {
    throw usageError(help, '-A, --arg and --argstr need -f FILE');
  }
  const drvWords = positionals.filter(isDrvPath);
  const installables = positionals.filter((word) => !isDrvPath(word));
  for (const word of installables) {
    if (word.startsWith('/nix/store/') && !word.includes('#')) {
      throw usageError(
        help,
        `'${word}' is a store path but not a derivation (/nix/store/….drv); it is already built`,
      );
    }
    if (values.file !== undefined) {
      throw usageError(help, `'${word}' with -f FILE: name attributes with -A, not as words`);
    }
  }
  const fleet = await loadFleet(resolveFleetPath({ flag: values.fleet, env: ctx.env }));
  const token = nonEmpty(ctx.env.FIRN_TOKEN);
  const file = values.file;
  if (file === undefined && positionals.length === 0) {
    throw usageError(
      help,
      'nothing to build: give -f FILE, .drv paths or flake installables (REF#ATTR)',
    );
  }
  // Evaluation runs while the coordinator opens its connections to the builders.
  const drvPaths =
    file !== undefined
      ? instantiate(
          { file, attrs: values.attr ?? [], args: pairs.args, argstrs: pairs.argstrs },
          { storeRoot, env: ctx.env },
        ).then((paths) => [...drvWords, ...paths])
      : installables.length > 0
        ? evaluateFlakes(installables, { storeRoot, env: ctx.env }).then((paths) => [
            ...drvWords,
            ...paths,
          ])
        : drvWords;
  // Awaited by coordinate(); this only keeps a failure before then from being "unhandled".
  if (drvPaths instanceof Promise) drvPaths.catch(() => undefined);

  const durations = new SqliteDurations(
    values.history ?? join(defaultDataDir(ctx.env), 'build-durations.sqlite'),
  );
  const controller = new AbortController();
  const onSignal = (): void => {
    controller.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const names = new Map<string, string>();
  const tty = !json && (ctx.stderr as { isTTY?: boolean }).isTTY === true;
  let view: LiveView | undefined;
  const report = (event: SchedulerEvent): void => {
    if (event.type !== 'requeued' && event.type !== 'builder-down') {
      names.set(event.drvPath, event.name);
    }
    const shown = event.type === 'failed' ? { ...event, log: logTail(event.log) } : event;
    if (json) ctx.stdout.write(JSON.stringify({ event: event.type, ...shown }) + '\n');
    else if (view !== undefined) view.event(event, progressLine(event, names));
    else ctx.stderr.write(progressLine(event, names));
  };
  let outcome: BuildOutcome;
  try {
    outcome = await coordinate({
      fleet,
      drvPaths,
      durations,
      storeRoot,
      token,
      noCacheCheck: values['no-cache-check'] === true,
      signal: controller.signal,
      onEvent: report,
      onPlan(jobs, builders) {
        if (tty && jobs.length > 0) view = new LiveView(ctx.stderr, liveState(jobs, builders));
      },
      env: ctx.env,
    });
  } finally {
    view?.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    durations.close();
  }
  const logs = await uploadLogs(outcome, fleet.cache?.url, token);
  const summary = { ...summarize(outcome), logs };
  if (json) ctx.stdout.write(JSON.stringify({ event: 'done', ...summary }) + '\n');
  else {
    ctx.stderr.write(summaryText(outcome, summary));
    if (outcome.result.failed.size === 0 && !outcome.result.cancelled) {
      ctx.stdout.write(outcome.outputs.map((path) => `${path}\n`).join(''));
    }
  }
  const { failed, skipped, cancelled } = outcome.result;
  if (cancelled)
    throw firnError('FIRN_E_BUILD_FAILED', 'the build was cancelled; running builds were stopped');
  if (failed.size > 0) {
    if (!json) {
      for (const [drvPath, failure] of failed) {
        ctx.stderr.write(
          `error: ${drvPath} failed on ${failure.builder}: ${failure.message}\n` +
            (failure.log === '' ? '' : `${indent(logTail(failure.log))}\n`) +
            (logs[drvPath] === undefined ? '' : `  full log: ${logs[drvPath]}\n`),
        );
      }
    }
    throw firnError(
      'FIRN_E_BUILD_FAILED',
      `${failed.size} derivation${failed.size === 1 ? '' : 's'} failed` +
        (skipped.size > 0 ? `; ${skipped.size} that depend on them were not built` : ''),
      {
        hint: 'the log tail of each failure is above; whatever was built is in the cache and will not be rebuilt',
        details: { failed: [...failed.keys()], skipped: [...skipped.keys()] },
      },
    );
  }
  return 0;
}

interface Summary {
  readonly outputs: readonly string[];
  readonly built: Record<string, string>;
  readonly substituted: readonly string[];
  readonly failed: readonly string[];
  readonly skipped: readonly string[];
  readonly wallSeconds: number;
  readonly criticalPath: readonly string[];
}

function summarize(outcome: BuildOutcome): Summary {
  return {
    outputs: outcome.outputs,
    built: Object.fromEntries([...outcome.result.built].map(([path, b]) => [path, b.builder])),
    substituted: [...outcome.cached],
    failed: [...outcome.result.failed.keys()],
    skipped: [...outcome.result.skipped.keys()],
    wallSeconds: round(outcome.result.wallMs / 1000),
    criticalPath: outcome.criticalPath,
  };
}

function summaryText(outcome: BuildOutcome, summary: Summary): string {
  const perBuilder = new Map<string, number>();
  for (const builder of Object.values(summary.built)) {
    perBuilder.set(builder, (perBuilder.get(builder) ?? 0) + 1);
  }
  const where = [...perBuilder].map(([name, count]) => `${name} ${count}`).join(', ');
  const jobs = new Map(outcome.jobs.map((job) => [job.drvPath, job]));
  const chain = summary.criticalPath.map((path) => jobs.get(path)?.name ?? path);
  const expected = summary.criticalPath.reduce(
    (sum, path) => sum + (jobs.get(path)?.expectedSeconds ?? 0),
    0,
  );
  return (
    `built ${Object.keys(summary.built).length}${where === '' ? '' : ` (${where})`}, ` +
    `${summary.substituted.length} already in the cache, ` +
    `${summary.failed.length} failed, ${summary.skipped.length} not built, ` +
    `wall time ${summary.wallSeconds} s` +
    (chain.length === 0
      ? ''
      : `; critical path ${chain.join(' → ')} (expected ${round(expected)} s)`) +
    '\n'
  );
}

function progressLine(event: SchedulerEvent, names: ReadonlyMap<string, string>): string {
  const name = (path: string): string => names.get(path) ?? path;
  switch (event.type) {
    case 'start':
      return `[${event.builder}] building ${event.name} (expected ${round(event.expectedSeconds)} s)\n`;
    case 'built':
      return `[${event.builder}] built ${event.name} in ${round(event.seconds)} s\n`;
    case 'failed':
      return `[${event.builder}] failed ${event.name}: ${event.message.split('\n')[0] ?? ''}\n`;
    case 'skipped':
      return `not building ${name(event.drvPath)}: it depends on ${name(event.because)}, which failed\n`;
    case 'requeued':
      return `[${event.builder}] lost while building ${name(event.drvPath)}: ${event.message.split('\n')[0] ?? ''}; building it elsewhere\n`;
    case 'builder-down':
      return `[${event.builder}] marked down for ${round(event.seconds)} s\n`;
  }
}

/** Uploads each failed build's log to the cache; drv path → URL of those stored. */
async function uploadLogs(
  outcome: BuildOutcome,
  cacheUrl: string | undefined,
  token: string | undefined,
): Promise<Record<string, string>> {
  const logs: Record<string, string> = {};
  if (cacheUrl === undefined) return logs;
  for (const [drvPath, failure] of outcome.result.failed) {
    const url = await uploadBuildLog({ cacheUrl, drvPath, log: failure.log, token });
    if (url !== undefined) logs[drvPath] = url;
  }
  return logs;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}

function round(seconds: number): number {
  return Math.round(seconds * 10) / 10;
}

/**
 * `firn doctor [--fleet F] [HOST…] [--json]`: checks every host of the fleet, all at once,
 * against what its inventory entry says; a table per host with a fix for each ✗. The checks
 * live in src/fleet/doctor/; this file parses flags, loads the inventory and prints.
 */
import { styleText } from 'node:util';
import { parseSize } from '../../config/sizes.ts';
import { renderPlain, toJson, type Style } from '../../fleet/doctor/report.ts';
import { DEFAULT_MIN_FREE_BYTES, runDoctor } from '../../fleet/doctor/runner.ts';
import { loadFleet, resolveFleetPath, selectHosts } from '../../fleet/inventory.ts';
import { parseCommandArgs, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';

const help: CommandHelp = {
  usage: 'firn doctor [--fleet FILE] [HOST…|@TAG…] [--json]',
  description: [
    'Check every host (or the HOSTs and @tags named) as a setup guide would have you do by hand:',
    'ssh with the inventory key and pinned host key, Nix version, a writable store, the declared',
    'systems and features, the builder user trusted, the cache reachable from the host, its key',
    'trusted and it a substituter, the push token accepted (builders), the negative TTL, free disk,',
    'and a round trip: a test path pushed from here and substituted on the host. All hosts are',
    'checked at once; an unreachable one fails within 5 s. Exits 1 if any check fails.',
    'Every check and its fix: docs/fleet.md, "firn doctor".',
  ].join('\n'),
  options: [
    '--fleet FILE        the inventory (default: FIRN_FLEET, then ./firn.toml)',
    '--json              print {"hosts":[{"name","ok","checks":[{"id","ok","detail","hint"}]}]}',
    '--token-file FILE   push token for the round trip (default: FIRN_TOKEN, then the netrc',
    "                    file here: FIRN_NETRC_FILE or Nix's)",
    '--no-round-trip     do not push a test path and substitute it on the hosts',
    '--min-free SIZE     free space the store needs (default 1G)',
  ],
  examples: ['firn doctor', 'firn doctor @opi --json', 'FIRN_TOKEN=… firn doctor ser5 opi01'],
};

export async function run(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    help,
    {
      fleet: { type: 'string' },
      json: { type: 'boolean' },
      'token-file': { type: 'string' },
      'no-round-trip': { type: 'boolean' },
      'min-free': { type: 'string' },
    } as const,
    { min: 0, max: Infinity },
  );
  if (args === undefined) return 0;
  const { values } = args;
  const minFreeBytes =
    values['min-free'] === undefined
      ? DEFAULT_MIN_FREE_BYTES
      : parseSize(values['min-free'], '--min-free');
  const fleet = await loadFleet(resolveFleetPath({ flag: values.fleet, env: ctx.env }));
  const hosts = selectHosts(fleet, args.positionals);
  const report = await runDoctor(fleet, hosts, {
    env: ctx.env,
    minFreeBytes,
    roundTrip: values['no-round-trip'] !== true,
    tokenFile: values['token-file'],
  });
  if (values.json === true) ctx.stdout.write(JSON.stringify(toJson(report)) + '\n');
  else ctx.stdout.write(renderPlain(report, styleFor(ctx)));
  return report.ok ? 0 : 1;
}

/** Colour only on a terminal (styleText checks the stream, NO_COLOR and FORCE_COLOR). */
function styleFor(ctx: CommandContext): Style {
  const tty = (ctx.stdout as { isTTY?: boolean }).isTTY === true;
  if (!tty) return (_format, text) => text;
  return (format, text) => styleText(format, text, { stream: ctx.stdout });
}

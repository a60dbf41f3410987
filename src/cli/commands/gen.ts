/**
 * `firn gen nix-conf | machines | nixos`: the Nix configuration of every role, derived from the
 * fleet inventory. The decisions live in src/fleet/gen-*.ts; this file parses flags, loads the
 * inventory and writes the output.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { firnError, fromFsError } from '../../errors.ts';
import { authorizedKeysFor } from '../../fleet/gen-keys.ts';
import { renderMachinesFile, type BuilderProtocol } from '../../fleet/gen-machines.ts';
import { renderNixConf } from '../../fleet/gen-nix-conf.ts';
import { GENERATED_MARKER, renderNixosModule } from '../../fleet/gen-nixos.ts';
import { DEFAULT_HOOK, DEFAULT_MACHINES_FILE, DEFAULT_NETRC_FILE } from '../../fleet/gen-plan.ts';
import {
  findHost,
  loadFleet,
  resolveFleetPath,
  selectHosts,
  type Fleet,
} from '../../fleet/inventory.ts';
import { dispatchSubcommand, parseCommandArgs, usageError, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';

const FLEET_OPTION = '--fleet FILE           the inventory (default: FIRN_FLEET, then ./firn.toml)';

export function run(ctx: CommandContext): Promise<number> {
  return dispatchSubcommand(
    ctx,
    {
      usage: 'firn gen COMMAND --fleet FILE …',
      description:
        "Derive each host's Nix configuration from the fleet inventory (firn.toml); see docs/fleet.md.",
    },
    {
      'nix-conf': { summary: 'nix.conf lines for one host, from its roles', run: runNixConf },
      machines: { summary: "a Nix machines file listing the fleet's builders", run: runMachines },
      nixos: { summary: 'one NixOS module per host, written to a directory', run: runNixos },
    },
  );
}

async function fleetFrom(ctx: CommandContext, flag: string | undefined): Promise<Fleet> {
  return loadFleet(resolveFleetPath({ flag, env: ctx.env }));
}

// ── nix-conf ─────────────────────────────────────────────────────────────────────────────────

const nixConfHelp: CommandHelp = {
  usage: 'firn gen nix-conf --host HOST [--fleet FILE] [options]',
  description: [
    "Print the nix.conf lines HOST needs, from its roles: the fleet's cache in extra-substituters and",
    'its key in extra-trusted-public-keys, and narinfo-cache-negative-ttl = 30 for every host; for',
    'builders the trusted SSH user, their features, netrc-file and the post-build-hook (`firn hook`);',
    'for every other host builders = @/etc/nix/machines and builders-use-substitutes. Add them to the',
    "daemon's /etc/nix/nix.conf. On NixOS use `firn gen nixos` instead.",
  ].join('\n'),
  options: [
    '--host HOST            the host, as named in [hosts.HOST]',
    FLEET_OPTION,
    `--hook PATH            the post-build-hook program (default ${DEFAULT_HOOK},`,
    '                       a script that runs `firn hook`)',
    `--netrc-file PATH      where builders keep their push token (default ${DEFAULT_NETRC_FILE})`,
    `--machines-file PATH   where \`firn gen machines\` output is installed (default ${DEFAULT_MACHINES_FILE})`,
  ],
  examples: [
    'firn gen nix-conf --host opi01 >> /etc/nix/nix.conf',
    'ssh root@opi02 "cat >> /etc/nix/nix.conf" < <(firn gen nix-conf --host opi02)',
  ],
};

async function runNixConf(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    nixConfHelp,
    {
      host: { type: 'string' },
      fleet: { type: 'string' },
      hook: { type: 'string' },
      'netrc-file': { type: 'string' },
      'machines-file': { type: 'string' },
    } as const,
    { min: 0, max: 0 },
  );
  if (args === undefined) return 0;
  const { values } = args;
  if (values.host === undefined) throw usageError(nixConfHelp, '--host is required');
  const fleet = await fleetFrom(ctx, values.fleet);
  const host = findHost(fleet, values.host);
  ctx.stdout.write(
    renderNixConf(fleet, host, {
      ...(values.hook === undefined ? {} : { hook: values.hook }),
      ...(values['netrc-file'] === undefined ? {} : { netrcFile: values['netrc-file'] }),
      ...(values['machines-file'] === undefined ? {} : { machinesFile: values['machines-file'] }),
    }),
  );
  return 0;
}

// ── machines ─────────────────────────────────────────────────────────────────────────────────

const machinesHelp: CommandHelp = {
  usage: 'firn gen machines [--fleet FILE] [--ssh-key PATH] [--protocol ssh|ssh-ng]',
  description: [
    "Print a Nix machines file (/etc/nix/machines) listing the fleet's builders: URI (ssh://USER@ADDRESS),",
    'systems, SSH key, max-jobs, speed-factor, features, mandatory features and the pinned host key.',
    "For hosts that keep Nix's own remote builds; firn build drives the builders itself.",
  ].join('\n'),
  options: [
    FLEET_OPTION,
    "--ssh-key PATH         the private key as the hosts that start builds see it (root's, as the",
    "                       daemon connects); default: each builder's ssh-key",
    '--protocol ssh|ssh-ng  store protocol (default ssh: in Nix 2.8 only it honours',
    '                       builders-use-substitutes per connection)',
  ],
  examples: ['firn gen machines --fleet firn.toml > /etc/nix/machines'],
};

async function runMachines(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    machinesHelp,
    {
      fleet: { type: 'string' },
      'ssh-key': { type: 'string' },
      protocol: { type: 'string' },
    } as const,
    { min: 0, max: 0 },
  );
  if (args === undefined) return 0;
  const protocol = parseProtocol(machinesHelp, args.values.protocol);
  const fleet = await fleetFrom(ctx, args.values.fleet);
  ctx.stdout.write(renderMachinesFile(fleet, { sshKey: args.values['ssh-key'], protocol }));
  return 0;
}

function parseProtocol(help: CommandHelp, value: string | undefined): BuilderProtocol | undefined {
  if (value === undefined || value === 'ssh' || value === 'ssh-ng') return value;
  throw usageError(help, `--protocol must be ssh or ssh-ng, not '${value}'`);
}

// ── nixos ────────────────────────────────────────────────────────────────────────────────────

const nixosHelp: CommandHelp = {
  usage: 'firn gen nixos --out DIR [--fleet FILE] [HOST…] [options]',
  description: [
    'Write one NixOS module per host, DIR/<host>.nix (or only for the HOSTs and @tags named): the',
    "cache's substituter and key everywhere; on builders the SSH user with the coordinator's key,",
    "trusted-users, firn's post-build-hook and drain; elsewhere nix.buildMachines and",
    "nix.distributedBuilds; on the cache host services.firn. Import each file together with firn's",
    'module (nix/module.nix). Files written earlier by this command are replaced; any other file is',
    'left alone (FIRN_E_FILE_EXISTS). Prints the paths written.',
  ].join('\n'),
  options: [
    '--out DIR              the directory to write to (created if missing)',
    FLEET_OPTION,
    '--authorized-key KEY   a public key (file, or the "ssh-ed25519 AAAA…" line) that may log in to',
    "                       builders; repeatable. Default: the .pub file beside each builder's ssh-key",
    '--ssh-key PATH         the private key as the hosts that start builds see it (default: ssh-key)',
    '--protocol ssh|ssh-ng  store protocol for nix.buildMachines (default ssh)',
    `--netrc-file PATH      where builders keep their push token (default ${DEFAULT_NETRC_FILE})`,
  ],
  examples: [
    'firn gen nixos --fleet firn.toml --out hosts/firn',
    'firn gen nixos --out hosts/firn @opi --authorized-key ~/.ssh/id_nix_builder.pub',
  ],
};

async function runNixos(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    nixosHelp,
    {
      out: { type: 'string' },
      fleet: { type: 'string' },
      'authorized-key': { type: 'string', multiple: true },
      'ssh-key': { type: 'string' },
      protocol: { type: 'string' },
      'netrc-file': { type: 'string' },
    } as const,
    { min: 0, max: Infinity },
  );
  if (args === undefined) return 0;
  const { values } = args;
  if (values.out === undefined) throw usageError(nixosHelp, '--out is required');
  const protocol = parseProtocol(nixosHelp, values.protocol);
  const fleet = await fleetFrom(ctx, values.fleet);
  const hosts = selectHosts(fleet, args.positionals);
  const keys = await authorizedKeysFor(hosts, {
    explicit: values['authorized-key'] ?? [],
    env: ctx.env,
  });
  const out = values.out;
  await mkdir(out, { recursive: true }).catch((error: unknown) => {
    throw fromFsError(error, out, 'create');
  });
  for (const host of hosts) {
    const text = renderNixosModule(fleet, host, {
      authorizedKeys: keys.get(host.name) ?? [],
      sshKey: values['ssh-key'],
      protocol,
      netrcFile: values['netrc-file'],
    });
    const path = join(out, `${host.name}.nix`);
    await writeGenerated(path, text);
    ctx.stdout.write(`${path}\n`);
  }
  return 0;
}

/** Replaces a file only if this command wrote it; never a hand-written one. */
async function writeGenerated(path: string, text: string): Promise<void> {
  const existing = await readFile(path, 'utf8').catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fromFsError(error, path, 'read');
  });
  if (existing !== undefined && !existing.startsWith(GENERATED_MARKER)) {
    throw firnError('FIRN_E_FILE_EXISTS', `${path} exists and was not written by firn gen nixos`, {
      hint: 'move it away, or write the modules to another directory with --out',
    });
  }
  const temp = `${path}.tmp-${process.pid}`;
  try {
    await writeFile(temp, text);
    await rename(temp, path);
  } catch (error) {
    throw fromFsError(error, path, 'write');
  }
}

/**
 * How the coordinator reaches a builder with OpenSSH: the inventory's user, key, config file and
 * pinned host key, batch mode (never a password prompt), and keep-alives so a builder that stops
 * answering is noticed within seconds rather than at the TCP timeout.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Host } from '../fleet/inventory.ts';

export interface SshTarget {
  readonly name: string;
  /** `ssh` options, without the destination. */
  readonly options: readonly string[];
  /** `ssh` arguments up to and including the destination; append `--` and the command. */
  readonly args: readonly string[];
  /** The same options as one NIX_SSHOPTS string (Nix splits it at spaces, without quoting). */
  readonly nixSshOpts: string;
  /** `user@address` for ssh:// store URLs. */
  readonly destination: string;
}

/** `knownHostsDir`: where a pinned host key is written as a known_hosts file. */
export function sshTarget(host: Host, knownHostsDir: string): SshTarget {
  const options: string[] = [];
  if (host.ssh.config !== undefined) options.push('-F', host.ssh.config);
  if (host.ssh.key !== undefined) options.push('-i', host.ssh.key);
  options.push(
    '-o',
    'BatchMode=yes',
    '-o',
    'ServerAliveInterval=5',
    '-o',
    'ServerAliveCountMax=3',
    '-o',
    'ConnectTimeout=10',
  );
  if (host.hostKey !== undefined) {
    const file = join(knownHostsDir, `${host.name}.known_hosts`);
    writeFileSync(file, `${host.address} ${host.hostKey}\n`);
    options.push('-o', `UserKnownHostsFile=${file}`, '-o', 'StrictHostKeyChecking=yes');
  }
  const destination = `${host.ssh.user}@${host.address}`;
  return {
    name: host.name,
    options,
    args: [...options, destination],
    nixSshOpts: options.join(' '),
    destination,
  };
}

/** Quotes a word for a POSIX shell (the remote side of ssh, or NIX_SSHOPTS splitting). */
export function quoteWord(word: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * SSH for the test fleet: ed25519 keys, each host's sshd_config (key auth only, root allowed,
 * the host's Nix environment set for every session), and the client side — one ssh_config with
 * every host and a known_hosts file holding their keys, so `StrictHostKeyChecking yes` holds.
 */
import { readFileSync } from 'node:fs';
import { runSync } from './netns.ts';

export const SSHD = '/usr/sbin/sshd';

/** Generates an ed25519 key pair at `path` (+ `.pub`); returns the public line without comment. */
export function generateKey(path: string, comment: string): string {
  runSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path]);
  const [type = '', blob = ''] = readFileSync(`${path}.pub`, 'utf8').trim().split(/\s+/);
  return `${type} ${blob}`;
}

export interface SshdConfigInput {
  readonly address: string;
  readonly hostKeyFile: string;
  readonly authorizedKeysFile: string;
  readonly pidFile: string;
  /** Set in every session sshd starts: the host's NIX_CONF_DIR, HOME, XDG dirs. */
  readonly env: Readonly<Record<string, string>>;
}

export function sshdConfig(input: SshdConfigInput): string {
  const setEnv = Object.entries(input.env)
    .map(([name, value]) => `${name}=${value}`)
    .join(' ');
  return [
    `ListenAddress ${input.address}:22`,
    `HostKey ${input.hostKeyFile}`,
    `PidFile ${input.pidFile}`,
    `AuthorizedKeysFile ${input.authorizedKeysFile}`,
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    // The key files live in a temp dir that sshd's ownership checks would refuse.
    'StrictModes no',
    'UseDNS no',
    'PrintMotd no',
    'LogLevel VERBOSE',
    'MaxStartups 100',
    // Processes started for a login (nix-store --serve …) see this host's nix.conf and store.
    `SetEnv ${setEnv}`,
    '',
  ].join('\n');
}

export interface SshClientHost {
  readonly name: string;
  readonly address: string;
  readonly hostKey: string;
}

/** One `Host NAME ADDRESS` block per host, then the settings every connection shares. */
export function sshClientConfig(input: {
  readonly hosts: readonly SshClientHost[];
  readonly identityFile: string;
  readonly knownHostsFile: string;
}): string {
  const blocks = input.hosts.map((host) =>
    [`Host ${host.name} ${host.address}`, `  HostName ${host.address}`].join('\n'),
  );
  return [
    ...blocks,
    'Host *',
    '  User root',
    `  IdentityFile ${input.identityFile}`,
    '  IdentitiesOnly yes',
    `  UserKnownHostsFile ${input.knownHostsFile}`,
    '  GlobalKnownHostsFile /dev/null',
    '  StrictHostKeyChecking yes',
    '  CheckHostIP no',
    '  BatchMode yes',
    '  ConnectTimeout 3',
    '  ServerAliveInterval 5',
    '  LogLevel ERROR',
    '',
  ].join('\n');
}

export function knownHosts(hosts: readonly SshClientHost[]): string {
  return hosts.map((host) => `${host.name},${host.address} ${host.hostKey}\n`).join('');
}

/** Quotes words for the remote shell that ssh hands its command line to. */
export function shellQuote(words: readonly string[]): string {
  return words
    .map((word) =>
      /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`,
    )
    .join(' ');
}

/**
 * One SSH connection per host for all of the doctor's checks: the first `ssh` becomes an
 * OpenSSH ControlMaster (kept alive with ControlPersist), and every later command runs as a
 * session multiplexed over it, so a host is dialled and authenticated once. The first
 * connection is also the `ssh` check: BatchMode (no prompt can hang it), a ConnectTimeout and a
 * hard deadline (an unreachable host fails in under 5 s), `IdentitiesOnly` with the
 * inventory's key (the right key, not whatever an agent offers), and, when the inventory pins
 * a host key, a known_hosts file holding only that key.
 */
import { access, constants, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expandHome, type Host } from '../inventory.ts';
import { run, type RunResult } from '../../process/run.ts';
import { fail, pass, type CheckResult } from './types.ts';

/** TCP connect and handshake must finish in this; the hard deadline is a little later. */
export const CONNECT_TIMEOUT_MS = 4500;
/** A master left behind by a killed doctor goes away after this long without sessions. */
const CONTROL_PERSIST_S = 60;

export interface RemoteResult extends RunResult {
  /** The command ran past its deadline and was stopped; `code` is then -1. */
  readonly timedOut: boolean;
}

export interface SshSession {
  /** `user@address` */
  readonly destination: string;
  /** Runs `command` (one string, for the remote user's shell) over the shared connection. */
  run(
    command: string,
    options?: { readonly input?: string; readonly timeoutMs?: number },
  ): Promise<RemoteResult>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** A private directory for control sockets and known_hosts files (short path: sockets). */
  readonly dir: string;
  /** Unique per host within `dir`. */
  readonly slot: number;
  readonly env: NodeJS.ProcessEnv;
  readonly connectTimeoutMs?: number;
}

export type OpenResult =
  | { readonly session: SshSession; readonly check: CheckResult }
  | { readonly session: undefined; readonly check: CheckResult };

export async function openSession(host: Host, options: OpenOptions): Promise<OpenResult> {
  const timeoutMs = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  const destination = `${host.ssh.user}@${host.address}`;
  const control = join(options.dir, `c${options.slot}`);
  const missingKey = await unreadableKey(host, options.env);
  if (missingKey !== undefined) return { session: undefined, check: missingKey };
  const base = await baseArgs(host, options, timeoutMs);
  const env = options.env;
  const first = await runWithDeadline(
    'ssh',
    [
      ...base,
      '-S',
      control,
      '-o',
      'ControlMaster=yes',
      '-o',
      `ControlPersist=${CONTROL_PERSIST_S}`,
      '--',
      destination,
      'true',
    ],
    { env, timeoutMs },
  );
  if (first.code !== 0) {
    return {
      session: undefined,
      check: sshFailure({
        stderr: first.stderr,
        timedOut: first.timedOut,
        host,
        timeoutMs,
        code: first.code,
      }),
    };
  }
  const pinned = host.hostKey === undefined ? 'host key from known_hosts' : 'host key pinned';
  const session: SshSession = {
    destination,
    run: (command, runOptions = {}) =>
      runWithDeadline(
        'ssh',
        [...base, '-S', control, '-o', 'ControlMaster=no', '--', destination, command],
        {
          env,
          timeoutMs: runOptions.timeoutMs ?? 30_000,
          ...(runOptions.input === undefined ? {} : { input: runOptions.input }),
        },
      ),
    async close() {
      await runWithDeadline('ssh', [...base, '-S', control, '-O', 'exit', '--', destination], {
        env,
        timeoutMs: 3000,
      });
    },
  };
  return { session, check: pass('ssh', `${destination}, ${pinned}`) };
}

/** ssh would only warn about a key file it cannot read, then fail as if the host refused it. */
async function unreadableKey(host: Host, env: NodeJS.ProcessEnv): Promise<CheckResult | undefined> {
  if (host.ssh.key === undefined) return undefined;
  const path = expandHome(host.ssh.key, env);
  try {
    await access(path, constants.R_OK);
    return undefined;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    return fail(
      'ssh',
      `the ssh-key ${path} cannot be read here (${code})`,
      `point ssh-key (in [defaults] or hosts.${host.name}) at the private key that logs in to ${host.name}`,
    );
  }
}

/** The options every ssh of this host shares: the inventory's config and key, no prompts. */
async function baseArgs(host: Host, options: OpenOptions, timeoutMs: number): Promise<string[]> {
  const args: string[] = [];
  if (host.ssh.config !== undefined) args.push('-F', expandHome(host.ssh.config, options.env));
  if (host.ssh.key !== undefined) {
    args.push('-i', expandHome(host.ssh.key, options.env), '-o', 'IdentitiesOnly=yes');
  }
  args.push(
    '-o',
    'BatchMode=yes',
    '-o',
    `ConnectTimeout=${Math.max(1, Math.floor(timeoutMs / 1000))}`,
    '-o',
    'ServerAliveInterval=5',
    '-o',
    'ServerAliveCountMax=3',
  );
  if (host.hostKey !== undefined) {
    // Only the pinned key is acceptable: a known_hosts file holding it alone, looked up under
    // an alias so the address or port the config resolves to does not matter.
    const alias = `firn-${host.name}`;
    const knownHosts = join(options.dir, `known_hosts_${options.slot}`);
    await writeFile(knownHosts, `${alias} ${host.hostKey}\n`, { mode: 0o600 });
    args.push(
      '-o',
      `UserKnownHostsFile=${knownHosts}`,
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      '-o',
      `HostKeyAlias=${alias}`,
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      'UpdateHostKeys=no',
      '-o',
      'CheckHostIP=no',
    );
  }
  return args;
}

async function runWithDeadline(
  command: string,
  args: readonly string[],
  options: {
    readonly env: NodeJS.ProcessEnv;
    readonly timeoutMs: number;
    readonly input?: string;
  },
): Promise<RemoteResult> {
  const signal = AbortSignal.timeout(options.timeoutMs);
  try {
    const result = await run(command, args, {
      env: options.env,
      signal,
      ...(options.input === undefined ? {} : { input: options.input }),
    });
    return { ...result, timedOut: false };
  } catch (error) {
    if (!signal.aborted) throw error;
    return { code: -1, signal: 'SIGTERM', stdout: Buffer.alloc(0), stderr: '', timedOut: true };
  }
}

/** What went wrong with the first connection, and the fix, from ssh's own words. */
export function sshFailure(input: {
  readonly stderr: string;
  readonly timedOut: boolean;
  readonly code: number;
  readonly host: Host;
  readonly timeoutMs: number;
}): CheckResult {
  const { host } = input;
  const destination = `${host.ssh.user}@${host.address}`;
  const said = lastLine(input.stderr);
  const seconds = `${(input.timeoutMs / 1000).toFixed(1)} s`;
  const keyName = host.ssh.key ?? "ssh's default key";
  if (input.timedOut || /timed out/i.test(said)) {
    return fail(
      'ssh',
      `${destination}: no answer within ${seconds}`,
      `is ${host.name} up and on the network? check hosts.${host.name}.address and any firewall in between (port 22, or the port in ssh-config)`,
    );
  }
  if (/connection refused/i.test(said)) {
    return fail(
      'ssh',
      `${destination}: connection refused (${said})`,
      `start sshd on ${host.name} (systemctl start sshd; on NixOS services.openssh.enable = true), or set its port in ssh-config`,
    );
  }
  if (/No route to host|Network is unreachable|Host is down/i.test(said)) {
    return fail(
      'ssh',
      `${destination}: ${said}`,
      `is ${host.name} up and on the network? check hosts.${host.name}.address and the routes to it`,
    );
  }
  if (/Could not resolve hostname|Name or service not known/i.test(said)) {
    return fail(
      'ssh',
      `${destination}: ${said}`,
      `fix hosts.${host.name}.address: put a name DNS resolves, or the IP address`,
    );
  }
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/i.test(input.stderr)) {
    return host.hostKey === undefined
      ? fail(
          'ssh',
          `${destination}: the host key is not in known_hosts (or differs from it)`,
          `pin it: host-key = "<ssh-keyscan -t ed25519 ${host.address}>" in hosts.${host.name}, or add it to known_hosts`,
        )
      : fail(
          'ssh',
          `${destination}: the host presented a different key than hosts.${host.name}.host-key`,
          `if ${host.name} was reinstalled, set host-key to the output of \`ssh-keyscan -t ed25519 ${host.address}\`; otherwise find out who answers at that address`,
        );
  }
  if (/Permission denied/i.test(said)) {
    return fail(
      'ssh',
      `${destination}: the host refused ${keyName} (${said})`,
      `authorize ${host.ssh.key === undefined ? 'your public key' : `${host.ssh.key}.pub`} for ${host.ssh.user} on ${host.name} (NixOS: users.users.${host.ssh.user}.openssh.authorizedKeys.keys; \`firn gen nixos\` does it for builders)`,
    );
  }
  return fail(
    'ssh',
    `${destination}: ssh failed (${said === '' ? `exit code ${input.code}` : said})`,
    `run \`ssh -v ${destination} true\` to see why`,
  );
}

function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('debug'));
  return lines.at(-1) ?? '';
}

/** Quotes words for the remote user's shell, which ssh hands the command line to. */
export function shellQuote(words: readonly string[]): string {
  return words
    .map((word) =>
      /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`,
    )
    .join(' ');
}

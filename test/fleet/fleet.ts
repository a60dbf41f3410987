/**
 * The test fleet: N real hosts on this machine, for tests of everything that talks to a fleet
 * (gen, doctor, build, deploy). Needs root, `ip`, `unshare`/`nsenter`, `sshd` and `nix`.
 *
 *   const fleet = await startFleet({ hosts: [{ name: 'opi01', extraPlatforms: ['aarch64-linux'] },
 *                                            { name: 'ser5' }], cacheUrl, cachePublicKey, t });
 *   await fleet.host('opi01').ssh(['nix-store', '--version']);
 *   await fleet.host('ser5').exec('nix-build', [...]);        // inside the host, no ssh
 *   fleet.writeInventory(join(dir, 'firn.toml'), { hosts: { opi01: { roles: ['builder'] } } });
 *
 * Each host is
 * - a network namespace `firn-<id>-<name>` whose `eth0` sits on one bridge (in its own
 *   namespace `firn-<id>-br`), at 10.213.X.(11+i) — X is a /24 the fleet checked was unused;
 * - a mount namespace (a file under the fleet's temp dir) in which the host's own directory is
 *   bind-mounted over /nix and a tmpfs over /run: a path built on one host is not valid on
 *   another, and nothing reaches the machine's real /nix;
 * - an sshd on ADDRESS:22 with key auth only, its own host key, and `SetEnv` giving every
 *   session the host's NIX_CONF_DIR, HOME, XDG dirs and TMPDIR, so `ssh host nix-store --serve
 *   --write` uses the host's nix.conf and store;
 * - a nix.conf with `build-users-group =` (the hosts share this machine's nixbld users, so
 *   one host's Nix would kill another's builds), `sandbox = false`, `substituters =` unless the
 *   fleet has a cache, `trusted-users = root`, and `extra-platforms` when asked, so an x86_64
 *   host stands in for an aarch64 board (builder = "/bin/sh" derivations build for it).
 *
 * The test process itself (in the root namespace) plays the operator's laptop: the fleet gives
 * the bridge a veth into the root namespace, `firn-<id>`, at 10.213.X.1 (`fleet.gateway`), so
 * ssh from the test reaches every host, and a loopback cache (`cacheUrl`) is forwarded to
 * `fleet.cacheUrl` on that address for the hosts. No other interface, address, route or mount
 * of the machine is touched.
 *
 * Cleanup: `await using fleet = …` or `t` in the options (dispose runs in `t.after`, also when
 * the test fails), and an `exit` handler for a test that forgot. Everything is found by the
 * fleet's id, so `cleanupStale()` (run by every `startFleet`) removes what a crashed run left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { stringify as stringifyToml } from 'smol-toml';
import { currentNixSystem } from '../../src/nix/machines.ts';
import { run, type RunResult } from '../../src/process/run.ts';
import { startForwarder, type Forwarder } from './forward.ts';
import { ip, killNamespace, namespaceInode, netnsPath, runSync } from './netns.ts';
import {
  claimSubnet,
  cleanupStale,
  fleetDir,
  netnsName,
  register,
  rootLinkName,
  teardownFleet,
} from './registry.ts';
import { generateKey, knownHosts, shellQuote, SSHD, sshClientConfig, sshdConfig } from './sshd.ts';

export { cleanupStale } from './registry.ts';
export { shellQuote } from './sshd.ts';

export interface FleetHostSpec {
  /** Lower-case letters, digits and "-"; also its name in ssh_config and the inventory. */
  readonly name: string;
  /** `extra-platforms` in its nix.conf, e.g. ['aarch64-linux']. */
  readonly extraPlatforms?: readonly string[];
  /** More nix.conf lines. */
  readonly nixConf?: string;
  /** Its [hosts.NAME] entry for writeInventory, in firn.toml spelling (roles, systems, …). */
  readonly inventory?: Readonly<Record<string, unknown>>;
}

export interface StartFleetOptions {
  readonly hosts: readonly FleetHostSpec[];
  /** A cache listening on loopback: forwarded to the hosts and put in their substituters. */
  readonly cacheUrl?: string;
  /** Its key, for the hosts' trusted-public-keys and the inventory. */
  readonly cachePublicKey?: string;
  /** A test context: dispose is registered with `t.after`. */
  readonly t?: { after(fn: () => unknown): void };
}

export interface ExecOptions {
  readonly input?: string | Uint8Array;
  readonly env?: NodeJS.ProcessEnv;
  readonly signal?: AbortSignal;
  readonly cwd?: string;
}

export interface SshOptions {
  /** Connect from this host's namespace instead of the test process (the root namespace). */
  readonly from?: FleetHost;
  readonly input?: string | Uint8Array;
  /** More ssh options, before the host name (e.g. ['-o', 'ConnectTimeout=1']). */
  readonly sshArgs?: readonly string[];
  readonly signal?: AbortSignal;
}

export interface FleetHost {
  readonly name: string;
  readonly address: string;
  /** The host's own directory: nix/ (its /nix), conf/ (NIX_CONF_DIR), home/, ssh keys, logs. */
  readonly dir: string;
  readonly netns: string;
  /** The file naming its mount namespace (for nsenter --mount). */
  readonly mountNamespace: string;
  readonly nixConfDir: string;
  /** `ssh-ed25519 AAAA…`, the key its sshd presents. */
  readonly hostKey: string;
  /** The environment of a process on this host (exec and ssh sessions alike). */
  readonly env: Readonly<Record<string, string>>;
  /** A path inside the host's directory. */
  path(...segments: string[]): string;
  /** Runs a program inside the host (its network and mount namespaces, its env). */
  exec(command: string, args: readonly string[], options?: ExecOptions): Promise<RunResult>;
  /** Like exec; a non-zero exit throws with stderr. */
  execChecked(command: string, args: readonly string[], options?: ExecOptions): Promise<RunResult>;
  /** The argv that runs `command` inside the host, for spawn(): ['nsenter', …]. */
  wrap(command: string, args: readonly string[]): { command: string; args: string[] };
  /** Runs a command over real ssh; words are quoted for the remote shell, a string is sent as is. */
  ssh(command: string | readonly string[], options?: SshOptions): Promise<RunResult>;
  /** `['-F', sshConfig, name]`: prepend your own ssh options, append the command. */
  sshArgs(): string[];
  /** Rewrites nix.conf: the fleet's base settings, the spec's nixConf, then `extra`. */
  writeNixConf(extra?: string): void;
  /** Is `path` valid in this host's store? */
  isValid(path: string): Promise<boolean>;
  startSshd(): Promise<void>;
  stopSshd(): Promise<void>;
  /** SIGKILLs every process in the host (sshd, sessions, builds): the machine is down. */
  kill(): void;
  /** Takes the host off the bridge (packets vanish: ssh times out) / puts it back. */
  disconnect(): void;
  reconnect(): void;
}

export interface InventoryOverrides {
  /** Replaces keys of [cache]; `false` leaves the table out. */
  readonly cache?: Readonly<Record<string, unknown>> | false;
  readonly defaults?: Readonly<Record<string, unknown>>;
  /** Per host, replaces keys of its entry; `false` leaves the host out. */
  readonly hosts?: Readonly<Record<string, Readonly<Record<string, unknown>> | false>>;
}

export interface Fleet {
  readonly id: string;
  readonly dir: string;
  /** e.g. `10.213.57` */
  readonly subnet: string;
  /** The root namespace's address on the fleet's bridge (the "laptop"). */
  readonly gateway: string;
  readonly hosts: readonly FleetHost[];
  /** ssh -F file: every host by name and address, root, the client key, known_hosts. */
  readonly sshConfig: string;
  readonly knownHostsFile: string;
  /** Private key that every host authorizes for root. */
  readonly clientKey: string;
  readonly clientPublicKey: string;
  /** The cache as the hosts reach it, when `cacheUrl` was given. */
  readonly cacheUrl: string | undefined;
  readonly cachePublicKey: string | undefined;
  host(name: string): FleetHost;
  /** Makes a loopback URL reachable from the hosts; returns the URL they use. */
  expose(url: string): Promise<string>;
  /** The firn.toml text for this fleet (ssh as root with the client key and sshConfig). */
  inventory(overrides?: InventoryOverrides): string;
  writeInventory(path: string, overrides?: InventoryOverrides): string;
  /** Namespace inodes, to check after dispose that nothing is left in them. */
  namespaceInodes(): { net: number[]; mnt: number[] };
  [Symbol.asyncDispose](): Promise<void>;
}

const HOST_NAME = /^[a-z][a-z0-9-]{0,19}$/;
const BRIDGE_NS = 'br';

export async function startFleet(options: StartFleetOptions): Promise<Fleet> {
  checkSpecs(options.hosts);
  cleanupStale();
  const id = randomBytes(3).toString('hex');
  register(id);
  const dir = fleetDir(id);
  const forwarders: Forwarder[] = [];
  let disposed = false;
  const dispose = async (): Promise<void> => {
    if (disposed) return;
    disposed = true;
    process.removeListener('exit', onExit);
    await Promise.all(forwarders.map((forwarder) => forwarder.close()));
    // A host's processes can take a moment to die on a loaded machine (a nix in the middle of
    // an fsync): try again before calling the cleanup failed.
    let problems = teardownFleet(id);
    for (let attempt = 1; problems.length > 0 && attempt <= 3; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
      problems = teardownFleet(id);
    }
    if (problems.length > 0) throw new Error(`fleet ${id} cleanup: ${problems.join('; ')}`);
  };
  const onExit = (): void => {
    if (!disposed) teardownFleet(id);
  };
  process.on('exit', onExit);
  options.t?.after(dispose);
  try {
    mkdirSync(dir, { mode: 0o755 });
    const fleet = await build(id, dir, options, forwarders, dispose);
    return fleet;
  } catch (error) {
    await dispose().catch(() => undefined);
    throw error;
  }
}

function checkSpecs(specs: readonly FleetHostSpec[]): void {
  const seen = new Set<string>();
  for (const spec of specs) {
    if (!HOST_NAME.test(spec.name) || spec.name === BRIDGE_NS) {
      throw new Error(`test fleet: bad host name '${spec.name}' (a-z, 0-9, -; not "br")`);
    }
    if (seen.has(spec.name)) throw new Error(`test fleet: host '${spec.name}' twice`);
    seen.add(spec.name);
  }
  if (specs.length === 0 || specs.length > 200) throw new Error('test fleet: 1 to 200 hosts');
  if (!existsSync('/nix')) throw new Error('test fleet: /nix must exist (install nix-bin)');
}

async function build(
  id: string,
  dir: string,
  options: StartFleetOptions,
  forwarders: Forwarder[],
  dispose: () => Promise<void>,
): Promise<Fleet> {
  const x = pickSubnet(id);
  const subnet = `10.213.${x}`;
  const gateway = `${subnet}.1`;
  const bridgeNs = netnsName(id, BRIDGE_NS);
  createBridge(id, bridgeNs, gateway);
  const nsDir = join(dir, 'ns');
  mkdirSync(nsDir);
  // A mount namespace file must sit on a private mount, or the kernel refuses to bind it.
  runSync('mount', ['--bind', nsDir, nsDir]);
  runSync('mount', ['--make-private', nsDir]);

  const clientKey = join(dir, 'client_ed25519');
  const clientPublicKey = generateKey(clientKey, `firn-fleet-${id}`);
  const sshConfigFile = join(dir, 'ssh_config');
  const knownHostsFile = join(dir, 'known_hosts');

  const expose = async (url: string): Promise<string> => {
    const parsed = new URL(url);
    const forwarder = await startForwarder(gateway, {
      host: parsed.hostname,
      port: Number(parsed.port === '' ? 80 : parsed.port),
    });
    forwarders.push(forwarder);
    return `${parsed.protocol}//${gateway}:${forwarder.port}`;
  };
  const cacheUrl = options.cacheUrl === undefined ? undefined : await expose(options.cacheUrl);

  const hosts = options.hosts.map((spec, index) =>
    createHost({
      id,
      dir,
      spec,
      index,
      address: `${subnet}.${11 + index}`,
      bridgeNs,
      nsDir,
      clientPublicKey,
      sshConfigFile,
      baseNixConf: baseNixConf(spec, cacheUrl, options.cachePublicKey),
    }),
  );
  writeFileSync(knownHostsFile, knownHosts(hosts));
  writeFileSync(sshConfigFile, sshClientConfig({ hosts, identityFile: clientKey, knownHostsFile }));
  await Promise.all(hosts.map((host) => host.startSshd()));

  const byName = new Map(hosts.map((host) => [host.name, host]));
  const inventory = (overrides: InventoryOverrides = {}): string =>
    inventoryText({
      hosts,
      specs: options.hosts,
      cacheUrl,
      cachePublicKey: options.cachePublicKey,
      clientKey,
      sshConfig: sshConfigFile,
      overrides,
    });
  return {
    id,
    dir,
    subnet,
    gateway,
    hosts,
    sshConfig: sshConfigFile,
    knownHostsFile,
    clientKey,
    clientPublicKey,
    cacheUrl,
    cachePublicKey: options.cachePublicKey,
    host(name) {
      const host = byName.get(name);
      if (host === undefined) throw new Error(`test fleet: no host '${name}'`);
      return host;
    },
    expose,
    inventory,
    writeInventory(path, overrides) {
      writeFileSync(path, inventory(overrides));
      return path;
    },
    namespaceInodes() {
      return {
        net: hosts.map((host) => namespaceInode(netnsPath(host.netns))),
        mnt: hosts.map((host) => namespaceInode(host.mountNamespace)),
      };
    },
    [Symbol.asyncDispose]: dispose,
  };
}

/** A /24 in 10.213.0.0/16 that no address or route of this machine uses and no fleet holds. */
function pickSubnet(id: string): number {
  const used = ip(['-o', 'addr', 'show']) + ip(['-o', 'route', 'show', 'table', 'all']);
  for (let attempt = 0; attempt < 64; attempt++) {
    const x = randomBytes(1)[0] ?? 0;
    if (x === 0 || x === 255) continue;
    if (used.includes(`10.213.${x}.`)) continue;
    if (claimSubnet(x, id)) return x;
  }
  throw new Error('test fleet: no free /24 in 10.213.0.0/16');
}

/** The bridge in its own namespace, and a veth from it to the root namespace at the gateway. */
function createBridge(id: string, bridgeNs: string, gateway: string): void {
  ip(['netns', 'add', bridgeNs]);
  ip(['link', 'set', 'lo', 'up'], bridgeNs);
  ip(['link', 'add', 'br0', 'type', 'bridge'], bridgeNs);
  ip(['link', 'set', 'br0', 'up'], bridgeNs);
  const link = rootLinkName(id);
  ip(['link', 'add', link, 'type', 'veth', 'peer', 'name', 'up0', 'netns', bridgeNs]);
  // No IPv6 link-local address in the root namespace: only the one address we add.
  const ipv6 = `/proc/sys/net/ipv6/conf/${link}/disable_ipv6`;
  if (existsSync(ipv6)) writeFileSync(ipv6, '1');
  ip(['addr', 'add', `${gateway}/24`, 'dev', link]);
  ip(['link', 'set', link, 'up']);
  ip(['link', 'set', 'up0', 'master', 'br0', 'up'], bridgeNs);
}

function baseNixConf(
  spec: FleetHostSpec,
  cacheUrl: string | undefined,
  cacheKey: string | undefined,
): string {
  return [
    'build-users-group =',
    'sandbox = false',
    'experimental-features = nix-command',
    'trusted-users = root',
    `substituters = ${cacheUrl ?? ''}`,
    `trusted-public-keys = ${cacheKey ?? ''}`,
    'narinfo-cache-negative-ttl = 0',
    ...(spec.extraPlatforms === undefined || spec.extraPlatforms.length === 0
      ? []
      : [`extra-platforms = ${spec.extraPlatforms.join(' ')}`]),
    spec.nixConf ?? '',
  ].join('\n');
}

interface HostInput {
  readonly id: string;
  readonly dir: string;
  readonly spec: FleetHostSpec;
  readonly index: number;
  readonly address: string;
  readonly bridgeNs: string;
  readonly nsDir: string;
  readonly clientPublicKey: string;
  readonly sshConfigFile: string;
  readonly baseNixConf: string;
}

function createHost(input: HostInput): FleetHost {
  const { spec, address, bridgeNs } = input;
  const name = spec.name;
  const dir = join(input.dir, 'hosts', name);
  const path = (...segments: string[]): string => join(dir, ...segments);
  for (const sub of ['nix', 'conf', 'home', 'tmp']) mkdirSync(path(sub), { recursive: true });
  const netns = netnsName(input.id, name);
  const peer = `h${input.index}`;

  ip(['netns', 'add', netns]);
  ip(['link', 'set', 'lo', 'up'], netns);
  ip([
    'link',
    'add',
    'eth0',
    'netns',
    netns,
    'type',
    'veth',
    'peer',
    'name',
    peer,
    'netns',
    bridgeNs,
  ]);
  ip(['addr', 'add', `${address}/24`, 'dev', 'eth0'], netns);
  ip(['link', 'set', 'eth0', 'up'], netns);
  ip(['link', 'set', peer, 'master', 'br0', 'up'], bridgeNs);

  const mountNamespace = join(input.nsDir, `${name}.mnt`);
  writeFileSync(mountNamespace, '');
  runSync('unshare', [`--mount=${mountNamespace}`, '--propagation', 'private', 'true']);
  runSync('nsenter', [
    `--mount=${mountNamespace}`,
    'sh',
    '-ec',
    'mount --bind "$1" /nix; mount -t tmpfs -o mode=755 firn-run /run; mkdir -m 755 /run/sshd',
    'sh',
    path('nix'),
  ]);

  const home = path('home');
  const env: Record<string, string> = {
    NIX_CONF_DIR: path('conf'),
    HOME: home,
    XDG_CACHE_HOME: join(home, '.cache'),
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_STATE_HOME: join(home, '.local', 'state'),
    TMPDIR: path('tmp'),
  };
  const hostKey = generateKey(path('ssh_host_ed25519_key'), name);
  writeFileSync(path('authorized_keys'), `${input.clientPublicKey}\n`);
  writeFileSync(
    path('sshd_config'),
    sshdConfig({
      address,
      hostKeyFile: path('ssh_host_ed25519_key'),
      authorizedKeysFile: path('authorized_keys'),
      pidFile: path('sshd.pid'),
      env,
    }),
  );
  const writeNixConf = (extra = ''): void => {
    writeFileSync(path('conf', 'nix.conf'), `${input.baseNixConf}\n${extra}\n`);
  };
  writeNixConf();

  const wrap = (command: string, args: readonly string[]): { command: string; args: string[] } => ({
    command: 'nsenter',
    args: [
      `--net=${netnsPath(netns)}`,
      `--mount=${mountNamespace}`,
      `--wd=${home}`,
      '--',
      command,
      ...args,
    ],
  });
  const execEnv = (extra: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: process.env.LANG ?? 'C.UTF-8',
    ...env,
    ...extra,
  });
  const exec = (
    command: string,
    args: readonly string[],
    options: ExecOptions = {},
  ): Promise<RunResult> => {
    const wrapped = wrap(command, args);
    return run(wrapped.command, wrapped.args, {
      env: execEnv(options.env),
      ...(options.input === undefined ? {} : { input: options.input }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    });
  };

  let sshd: ChildProcess | undefined;
  let sshdExit: Promise<void> = Promise.resolve();
  const host: FleetHost = {
    name,
    address,
    dir,
    netns,
    mountNamespace,
    nixConfDir: path('conf'),
    hostKey,
    env,
    path,
    exec,
    async execChecked(command, args, options) {
      const result = await exec(command, args, options);
      if (result.code !== 0) {
        throw new Error(
          `${name}: ${command} ${args.join(' ')} failed (${result.code}): ${result.stderr}`,
        );
      }
      return result;
    },
    wrap,
    ssh(command, options = {}) {
      const remote = typeof command === 'string' ? command : shellQuote(command);
      const args = [...(options.sshArgs ?? []), ...host.sshArgs(), '--', remote];
      const runOptions = {
        ...(options.input === undefined ? {} : { input: options.input }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      };
      if (options.from !== undefined) return options.from.exec('ssh', args, runOptions);
      return run('ssh', args, { ...runOptions, env: process.env });
    },
    sshArgs: () => ['-F', input.sshConfigFile, name],
    writeNixConf,
    async isValid(storePath) {
      const result = await exec('nix-store', ['--check-validity', storePath]);
      return result.code === 0;
    },
    async startSshd() {
      if (sshd !== undefined) return;
      const log = openSync(path('sshd.log'), 'a');
      const wrapped = wrap(SSHD, ['-D', '-e', '-f', path('sshd_config')]);
      const child = spawn(wrapped.command, wrapped.args, {
        stdio: ['ignore', log, log],
        env: execEnv(undefined),
      });
      closeSync(log);
      // A fleet a test forgot to dispose must not keep the test process alive.
      child.unref();
      sshd = child;
      sshdExit = new Promise((resolve) => {
        child.once('exit', () => {
          if (sshd === child) sshd = undefined;
          resolve();
        });
      });
      await waitForPort(address, 22, child, () => readFileSync(path('sshd.log'), 'utf8'));
    },
    async stopSshd() {
      sshd?.kill('SIGTERM');
      await sshdExit;
    },
    kill() {
      killNamespace('net', namespaceInode(netnsPath(netns)));
      sshd = undefined;
    },
    disconnect() {
      ip(['link', 'set', peer, 'down'], bridgeNs);
    },
    reconnect() {
      ip(['link', 'set', peer, 'up'], bridgeNs);
    },
  };
  return host;
}

async function waitForPort(
  address: string,
  port: number,
  child: ChildProcess,
  log: () => string,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`sshd on ${address} exited: ${log()}`);
    }
    if (await canConnect(address, port)) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`sshd on ${address} did not listen within 10 s: ${log()}`);
}

function canConnect(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port });
    socket.setTimeout(500);
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => {
      done(true);
    });
    socket.once('error', () => {
      done(false);
    });
    socket.once('timeout', () => {
      done(false);
    });
  });
}

function inventoryText(input: {
  readonly hosts: readonly FleetHost[];
  readonly specs: readonly FleetHostSpec[];
  readonly cacheUrl: string | undefined;
  readonly cachePublicKey: string | undefined;
  readonly clientKey: string;
  readonly sshConfig: string;
  readonly overrides: InventoryOverrides;
}): string {
  const { overrides } = input;
  const document: Record<string, unknown> = {};
  if (
    overrides.cache !== false &&
    (input.cacheUrl !== undefined || overrides.cache !== undefined)
  ) {
    document.cache = {
      ...(input.cacheUrl === undefined ? {} : { url: input.cacheUrl }),
      ...(input.cachePublicKey === undefined ? {} : { 'public-key': input.cachePublicKey }),
      ...overrides.cache,
    };
  }
  document.defaults = {
    'ssh-user': 'root',
    'ssh-key': input.clientKey,
    'ssh-config': input.sshConfig,
    ...overrides.defaults,
  };
  const hosts: Record<string, unknown> = {};
  input.hosts.forEach((host, index) => {
    const override = overrides.hosts?.[host.name];
    if (override === false) return;
    const spec = input.specs[index];
    hosts[host.name] = {
      address: host.address,
      systems: [currentNixSystem(), ...(spec?.extraPlatforms ?? [])],
      roles: ['builder', 'target'],
      'host-key': host.hostKey,
      ...spec?.inventory,
      ...override,
    };
  });
  document.hosts = hosts;
  return stringifyToml(document) + '\n';
}

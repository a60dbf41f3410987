/**
 * The host's Nix itself: is it there and recent, can the SSH user write to the store, does it
 * build for the systems and features the inventory declares, does it trust the builder user,
 * does it forget cache misses quickly, is there room on the store's disk. Each check is a
 * gatherer (commands over the session) and a pure evaluator (tested without a host).
 */
import { randomBytes } from 'node:crypto';
import { NEGATIVE_TTL } from '../gen-plan.ts';
import type { Host } from '../inventory.ts';
import { noSettings, tail, type CheckContext } from './context.ts';
import { formatBytes } from '../../config/sizes.ts';
import { compareVersions, parseDf, parseNixVersion, settingList } from './nix-facts.ts';
import { shellQuote } from './ssh-session.ts';
import { fail, pass, type CheckResult } from './types.ts';

/** firn's oldest supported Nix: the one its formats and protocols are tested against. */
export const MIN_NIX_VERSION = [2, 8] as const;

// ── nix-version ──────────────────────────────────────────────────────────────────────────────

export async function checkNixVersion(ctx: CheckContext): Promise<CheckResult> {
  const result = await ctx.session.run('nix-store --version');
  if (result.timedOut) return fail('nix-version', '`nix-store --version` hung', FIX_NIX_PATH);
  return evaluateNixVersion(result.code, result.stdout.toString('utf8'), result.stderr);
}

const FIX_NIX_PATH =
  'install Nix, and make sure a non-interactive `ssh HOST nix-store --version` finds it (PATH; on NixOS it is always there)';

export function evaluateNixVersion(code: number, stdout: string, stderr: string): CheckResult {
  if (code === 127 || /not found/i.test(stderr)) {
    return fail('nix-version', 'nix-store is not on the PATH of an ssh session', FIX_NIX_PATH);
  }
  const version = parseNixVersion(stdout);
  if (code !== 0 || version === undefined) {
    return fail(
      'nix-version',
      `\`nix-store --version\` failed: ${code === 0 ? stdout.trim() : tail(stderr)}`,
      FIX_NIX_PATH,
    );
  }
  const minimum = MIN_NIX_VERSION.join('.');
  if (compareVersions(version.parts, MIN_NIX_VERSION) < 0) {
    return fail(
      'nix-version',
      `Nix ${version.text} is older than ${minimum}`,
      `upgrade Nix to ${minimum} or newer (NixOS: nix.package = pkgs.nixVersions.stable)`,
    );
  }
  return pass('nix-version', `Nix ${version.text}`);
}

// ── store-writable ───────────────────────────────────────────────────────────────────────────

/**
 * Adds a small file with a fresh nonce (a path already valid would not be written again), then
 * deletes it: both need a writable store (or a nix-daemon that accepts the user).
 */
export function storeProbeScript(nonce: string): string {
  return [
    'set -e',
    'd=$(mktemp -d)',
    `trap 'rm -rf "$d"' EXIT`,
    `printf '%s\\n' ${shellQuote([`firn doctor store probe ${nonce}`])} > "$d/firn-doctor-probe"`,
    'p=$(nix-store --add "$d/firn-doctor-probe")',
    'echo "$p"',
    'nix-store --delete "$p" >/dev/null 2>&1 || true',
  ].join('\n');
}

export async function checkStoreWritable(ctx: CheckContext): Promise<CheckResult> {
  const probe = (): ReturnType<typeof ctx.session.run> =>
    ctx.session.run(shellQuote(['sh', '-c', storeProbeScript(randomBytes(8).toString('hex'))]));
  let result = await probe();
  // Nix 2.8 on a store nobody used yet races with itself when several nix commands start at
  // once (SQLite "database is busy" while creating the schema): one retry tells that apart.
  if (!result.timedOut && result.code !== 0) {
    await new Promise((resolve) => setTimeout(resolve, 300));
    result = await probe();
  }
  const path = result.stdout.toString('utf8').trim();
  if (!result.timedOut && result.code === 0 && path.startsWith('/')) {
    return pass('store-writable', `added and deleted ${path}`);
  }
  const why = result.timedOut ? 'timed out after 30 s' : tail(result.stderr);
  return fail(
    'store-writable',
    `\`nix-store --add\` failed as ${ctx.host.ssh.user}: ${why}`,
    /daemon-socket|Connection refused|No such file/i.test(why)
      ? 'start the nix-daemon (systemctl start nix-daemon) and check /nix/var/nix/daemon-socket'
      : `let ${ctx.host.ssh.user} write to the store: run nix-daemon and keep the user in allowed-users; check that /nix is mounted read-write and not full`,
  );
}

// ── systems and features ─────────────────────────────────────────────────────────────────────

export async function checkSystems(ctx: CheckContext): Promise<CheckResult> {
  const settings = await ctx.nixSettings();
  if (!settings.ok) return noSettings('systems', settings);
  return evaluateSystems(ctx.host, settings.settings);
}

export function evaluateSystems(host: Host, settings: ReadonlyMap<string, string>): CheckResult {
  const system = settings.get('system') ?? '';
  const extra = settingList(settings, 'extra-platforms');
  const supported = new Set([system, ...extra]);
  const missing = host.systems.filter((declared) => !supported.has(declared));
  const seen = `system ${system || '(unset)'}, extra-platforms ${extra.join(' ') || '(none)'}`;
  if (missing.length === 0) return pass('systems', `${host.systems.join(', ')} (${seen})`);
  const list = missing.join(' ');
  return fail(
    'systems',
    `${missing.join(', ')} declared but not supported (${seen})`,
    `add \`extra-platforms = ${list}\` to nix.conf with emulation (NixOS: boot.binfmt.emulatedSystems = [ ${missing.map((s) => `"${s}"`).join(' ')} ]), or take ${missing.length === 1 ? 'it' : 'them'} out of hosts.${host.name}.systems`,
  );
}

export async function checkFeatures(ctx: CheckContext): Promise<CheckResult> {
  const settings = await ctx.nixSettings();
  if (!settings.ok) return noSettings('features', settings);
  return evaluateFeatures(ctx.host, settings.settings);
}

/** Declared features and mandatory features must all be system features. */
export function evaluateFeatures(host: Host, settings: ReadonlyMap<string, string>): CheckResult {
  const declared = [...new Set([...host.features, ...host.mandatoryFeatures])].sort();
  const available = new Set(settingList(settings, 'system-features'));
  const missing = declared.filter((feature) => !available.has(feature));
  const seen = `system-features ${[...available].join(' ') || '(none)'}`;
  if (missing.length === 0) return pass('features', `${declared.join(', ')} (${seen})`);
  return fail(
    'features',
    `${missing.join(', ')} declared but not a system feature (${seen})`,
    `add \`extra-system-features = ${missing.join(' ')}\` to nix.conf (\`firn gen nix-conf --host ${host.name}\` has it), or take ${missing.length === 1 ? 'it' : 'them'} out of hosts.${host.name}.features`,
  );
}

// ── trusted-user ─────────────────────────────────────────────────────────────────────────────

export async function checkTrustedUser(ctx: CheckContext): Promise<CheckResult> {
  const settings = await ctx.nixSettings();
  if (!settings.ok) return noSettings('trusted-user', settings);
  const ids = await ctx.session.run('id -un; id -Gn');
  const [user = ctx.host.ssh.user, groups = ''] = ids.stdout.toString('utf8').trim().split('\n');
  return evaluateTrustedUser(
    user.trim(),
    groups.split(/\s+/).filter((group) => group !== ''),
    settings.settings,
  );
}

/**
 * The builder user must be trusted, or the daemon refuses the unsigned paths the coordinator
 * sends and the settings it passes. root opens the store directly and needs no entry.
 */
export function evaluateTrustedUser(
  user: string,
  groups: readonly string[],
  settings: ReadonlyMap<string, string>,
): CheckResult {
  if (user === 'root') return pass('trusted-user', 'root (opens the store itself)');
  const trusted = settingList(settings, 'trusted-users');
  const match = trusted.find(
    (entry) =>
      entry === '*' || entry === user || (entry.startsWith('@') && groups.includes(entry.slice(1))),
  );
  const seen = `trusted-users = ${trusted.join(' ') || '(none)'}`;
  if (match !== undefined) return pass('trusted-user', `${user} (through ${match}; ${seen})`);
  return fail(
    'trusted-user',
    `${user} is not trusted (${seen})`,
    `add \`extra-trusted-users = ${user}\` to nix.conf and restart nix-daemon (NixOS: nix.settings.trusted-users = [ "root" "${user}" ])`,
  );
}

// ── negative-ttl ─────────────────────────────────────────────────────────────────────────────

export async function checkNegativeTtl(ctx: CheckContext): Promise<CheckResult> {
  const settings = await ctx.nixSettings();
  if (!settings.ok) return noSettings('negative-ttl', settings);
  return evaluateNegativeTtl(settings.settings);
}

export function evaluateNegativeTtl(settings: ReadonlyMap<string, string>): CheckResult {
  const text = settings.get('narinfo-cache-negative-ttl');
  const seconds = Number(text);
  if (text !== undefined && text !== '' && Number.isInteger(seconds) && seconds <= NEGATIVE_TTL) {
    return pass('negative-ttl', `narinfo-cache-negative-ttl = ${seconds}`);
  }
  return fail(
    'negative-ttl',
    `narinfo-cache-negative-ttl = ${text ?? '(unset)'}: a path pushed after the host last asked stays invisible that long`,
    `set \`narinfo-cache-negative-ttl = ${NEGATIVE_TTL}\` in nix.conf (\`firn gen nix-conf\` has it)`,
  );
}

// ── disk ─────────────────────────────────────────────────────────────────────────────────────

export async function checkDisk(ctx: CheckContext, minFreeBytes: number): Promise<CheckResult> {
  const result = await ctx.session.run('df -Pk /nix/store');
  if (result.code !== 0) {
    return fail(
      'disk',
      `\`df -Pk /nix/store\` failed: ${result.timedOut ? 'timed out' : tail(result.stderr)}`,
      'check that /nix/store exists and its file system answers',
    );
  }
  return evaluateDisk(result.stdout.toString('utf8'), minFreeBytes);
}

export function evaluateDisk(dfOutput: string, minFreeBytes: number): CheckResult {
  const space = parseDf(dfOutput);
  if (space === undefined) {
    return fail(
      'disk',
      `cannot read \`df -Pk\` output: ${dfOutput.trim()}`,
      'check df on the host',
    );
  }
  const detail = `${formatBytes(space.availableBytes)} free on ${space.mountPoint} (${space.usedPercent}% used)`;
  if (space.availableBytes >= minFreeBytes) return pass('disk', detail);
  return fail(
    'disk',
    `${detail}, less than ${formatBytes(minFreeBytes)}`,
    'free space: `nix-collect-garbage --delete-older-than 14d` (NixOS: nix.gc.automatic = true), or grow the disk',
  );
}

/**
 * The fleet inventory, `firn.toml`: every host once, with its address, systems, capacity, roles
 * and SSH identity, and the cache they share. Everything fleet-wide (gen, doctor, build, deploy)
 * starts from `loadFleet`.
 *
 * API:
 *   resolveFleetPath({ flag, env, cwd })  `--fleet FILE`, else $FIRN_FLEET, else ./firn.toml
 *   loadFleet(path)                       read + parse; throws FIRN_E_FILE_NOT_FOUND / FIRN_E_FLEET_INVALID
 *   parseFleet(text, file)                the same from a string (file only names it in messages)
 *   Fleet, Host, Role, CacheSettings      the resolved, defaults-applied, frozen objects
 *   hasRole(host, role), buildersOf(fleet), findHost(fleet, name), selectHosts(fleet, selectors),
 *   expandHome(path, env)                 `~/…` as ssh reads it
 *
 * Errors list every problem at once, each as `file:line: key.path: what is wrong; what to write`,
 * e.g. `firn.toml:12: hosts.opi01.systems[0]: "arm64-linux" is not a Nix system name; write
 * "aarch64-linux"`. The problems are also in `details.problems` for --json.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { firnError, fromFsError } from '../errors.ts';
import {
  fleetFileSchema,
  KEY_EXAMPLES,
  KNOWN_KEYS,
  type FleetFile,
  type HostEntry,
  type Role,
} from './inventory-schema.ts';
import { parseSshPublicKey, formatSshPublicKey } from './ssh-host-key.ts';
import { closest } from './suggest.ts';
import { locateKey } from './toml-locate.ts';

export type { Role } from './inventory-schema.ts';
export { ROLES } from './inventory-schema.ts';

export interface CacheSettings {
  /** Without a trailing slash. */
  readonly url: string;
  /** `name:base64`, or undefined when the inventory does not give it. */
  readonly publicKey: string | undefined;
}

export interface SshSettings {
  readonly user: string;
  /** As written (`~` not expanded; relative paths made absolute from the inventory's folder). */
  readonly key: string | undefined;
  readonly config: string | undefined;
}

export interface Host {
  readonly name: string;
  /** DNS name or IP address; the host's name when the inventory gives none. */
  readonly address: string;
  /** Nix systems it builds for (empty for hosts that do not build). */
  readonly systems: readonly string[];
  readonly maxJobs: number;
  readonly speedFactor: number;
  /** Sorted, unique. */
  readonly features: readonly string[];
  readonly mandatoryFeatures: readonly string[];
  readonly roles: readonly Role[];
  /** `ssh-ed25519 AAAA…` without comment: ssh must present exactly this key. */
  readonly hostKey: string | undefined;
  readonly tags: readonly string[];
  readonly ssh: SshSettings;
}

export interface Fleet {
  /** The inventory file, absolute. */
  readonly file: string;
  readonly cache: CacheSettings | undefined;
  /** In the order the file lists them. */
  readonly hosts: readonly Host[];
}

export interface Problem {
  /** `hosts.opi01.systems[0]`, or `` for the file as a whole. */
  readonly path: string;
  /** 1-based, when the key could be found in the text. */
  readonly line: number | undefined;
  readonly message: string;
}

/** `--fleet FILE`, else `$FIRN_FLEET`, else `firn.toml` in the current directory. */
export function resolveFleetPath(options: {
  readonly flag?: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd?: string;
}): string {
  const cwd = options.cwd ?? process.cwd();
  const chosen = options.flag ?? nonEmpty(options.env.FIRN_FLEET) ?? 'firn.toml';
  return resolve(cwd, chosen);
}

export async function loadFleet(path: string): Promise<Fleet> {
  const file = resolve(path);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const mapped = fromFsError(error, file, 'read the fleet inventory');
    if (mapped.code !== 'FIRN_E_FILE_NOT_FOUND') throw mapped;
    throw firnError('FIRN_E_FILE_NOT_FOUND', `no fleet inventory at ${file}`, {
      cause: error,
      hint: 'write a firn.toml (see docs/fleet.md), or point to yours with --fleet FILE or FIRN_FLEET',
    });
  }
  return parseFleet(text, file);
}

/** Parses inventory text; `file` names it in messages and anchors relative paths. */
export function parseFleet(text: string, file: string): Fleet {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    const reason = error.message.split('\n')[0]?.replace(/^Invalid TOML document: /, '') ?? '';
    throw invalid(file, [
      { path: '', line: error.line, message: `this is not valid TOML: ${reason}` },
    ]);
  }
  const parsed = fleetFileSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) throw invalid(file, zodProblems(parsed.error, text));
  const fleet = resolveFleet(parsed.data, file);
  const problems = crossCheck(fleet, parsed.data, text);
  if (problems.length > 0) throw invalid(file, problems);
  return fleet;
}

// ── resolving defaults ─────────────────────────────────────────────────────────────────────────

function resolveFleet(data: FleetFile, file: string): Fleet {
  const base = dirname(file);
  const hosts = Object.entries(data.hosts).map(([name, entry]) =>
    resolveHost(name, entry, data, base),
  );
  const cache =
    data.cache === undefined
      ? undefined
      : Object.freeze({
          url: data.cache.url.replace(/\/+$/, ''),
          publicKey: data.cache['public-key'],
        });
  return Object.freeze({ file, cache, hosts: Object.freeze(hosts) });
}

function resolveHost(name: string, entry: HostEntry, data: FleetFile, base: string): Host {
  const defaults = data.defaults;
  const hostKey =
    entry['host-key'] === undefined ? undefined : parseSshPublicKey(entry['host-key']);
  return Object.freeze({
    name,
    address: entry.address ?? name,
    systems: Object.freeze(unique(entry.systems)),
    maxJobs: entry['max-jobs'],
    speedFactor: entry['speed-factor'],
    features: Object.freeze(sortedUnique(entry.features)),
    mandatoryFeatures: Object.freeze(sortedUnique(entry['mandatory-features'])),
    roles: Object.freeze(unique(entry.roles)),
    hostKey: hostKey?.ok === true ? formatSshPublicKey(hostKey.key) : undefined,
    tags: Object.freeze(unique(entry.tags)),
    ssh: Object.freeze({
      user: entry['ssh-user'] ?? defaults['ssh-user'],
      key: anchor(entry['ssh-key'] ?? defaults['ssh-key'], base),
      config: anchor(entry['ssh-config'] ?? defaults['ssh-config'], base),
    }),
  });
}

/** Relative paths in the inventory are relative to its folder; `~/…` stays for ssh to expand. */
function anchor(path: string | undefined, base: string): string | undefined {
  if (path === undefined || isAbsolute(path) || path === '~' || path.startsWith('~/')) return path;
  return join(base, path);
}

// ── checks across hosts ────────────────────────────────────────────────────────────────────────

function crossCheck(fleet: Fleet, data: FleetFile, text: string): Problem[] {
  const problems: Problem[] = [];
  const at = (path: PropertyKey[], message: string): void => {
    problems.push({ path: formatPath(path), line: locateKey(text, path), message });
  };
  const byAddress = new Map<string, Host>();
  for (const host of fleet.hosts) {
    const entry = data.hosts[host.name];
    const key = host.address.toLowerCase();
    const first = byAddress.get(key);
    if (first === undefined) byAddress.set(key, host);
    else {
      const implicit = entry?.address === undefined ? ' (its name: it has no address)' : '';
      at(
        ['hosts', host.name, 'address'],
        `address ${JSON.stringify(host.address)}${implicit} is also the address of hosts.${first.name}; each machine is listed once, so give each host its own address or remove the duplicate`,
      );
    }
    if (host.roles.includes('builder') && host.systems.length === 0) {
      at(
        ['hosts', host.name, 'systems'],
        `a builder needs the systems it builds for; write e.g. ${KEY_EXAMPLES.systems ?? ''}`,
      );
    }
    if (host.roles.includes('cache') && fleet.cache === undefined) {
      at(
        ['hosts', host.name, 'roles'],
        `role "cache" needs a [cache] table with the cache's url; write ${KEY_EXAMPLES.cache ?? ''}`,
      );
    }
  }
  return problems;
}

// ── zod issues → problems ──────────────────────────────────────────────────────────────────────

function zodProblems(error: z.ZodError, text: string): Problem[] {
  const problems: Problem[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const path = [...issue.path, key];
        problems.push({
          path: formatPath(path),
          line: locateKey(text, path),
          message: unknownKeyMessage(issue.path, key),
        });
      }
      continue;
    }
    problems.push({
      path: formatPath(issue.path),
      line: locateKey(text, issue.path),
      message: issueMessage(issue),
    });
  }
  return problems;
}

function unknownKeyMessage(parent: readonly PropertyKey[], key: string): string {
  const known = knownKeysAt(parent);
  const match = closest(key, known);
  if (match !== undefined) return `unknown key ${JSON.stringify(key)}; did you mean "${match}"?`;
  return `unknown key ${JSON.stringify(key)}; the keys here are ${known.join(', ')}`;
}

function knownKeysAt(parent: readonly PropertyKey[]): readonly string[] {
  if (parent.length === 0) return KNOWN_KEYS.top;
  if (parent[0] === 'cache') return KNOWN_KEYS.cache;
  if (parent[0] === 'defaults') return KNOWN_KEYS.defaults;
  return KNOWN_KEYS.host;
}

/** zod's message, made to say what was found and what to write instead. */
function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'custom') return issue.message;
  if (issue.code === 'invalid_value') return issue.message;
  if (issue.code === 'invalid_key') return issue.issues[0]?.message ?? issue.message;
  const key = [...issue.path].reverse().find((part): part is string => typeof part === 'string');
  const example = key === undefined ? undefined : KEY_EXAMPLES[key];
  let message = issue.message.replace(/^Invalid input: /, '');
  if (issue.code === 'invalid_type') {
    message =
      issue.input === undefined
        ? `${key ?? 'this'} is required`
        : `expected ${article(issue.expected)}, found ${describe(issue.input)}`;
  } else if (issue.code === 'too_small') {
    message = `must be at least ${String(issue.minimum)}, not ${describe(issue.input)}`;
  } else if (issue.code === 'too_big') {
    message = `must be at most ${String(issue.maximum)}, not ${describe(issue.input)}`;
  }
  const says = /\bwrite\b/.test(message);
  return example === undefined || says || issue.path.at(-1) !== key
    ? message
    : `${message}; write e.g. ${example}`;
}

function article(type: string): string {
  const names: Readonly<Record<string, string>> = {
    array: 'a list ["…"]',
    object: 'a table',
    record: 'a table',
    string: 'a string "…"',
    number: 'a number',
    int: 'a whole number',
    boolean: 'true or false',
  };
  return names[type] ?? type;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (value === null) return 'nothing';
  if (typeof value === 'object') return 'a table';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${typeof value} ${String(value)}`;
  }
  return typeof value;
}

/** `["hosts", "opi01", "systems", 0]` → `hosts.opi01.systems[0]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let text = '';
  for (const part of path) {
    if (typeof part === 'number') text += `[${part}]`;
    else {
      const name = String(part);
      const bare = /^[A-Za-z0-9_-]+$/.test(name) ? name : JSON.stringify(name);
      text += text === '' ? bare : `.${bare}`;
    }
  }
  return text;
}

function invalid(file: string, unsorted: readonly Problem[]): Error {
  const problems = [...unsorted].sort(
    (a, b) => (a.line ?? Infinity) - (b.line ?? Infinity) || a.path.localeCompare(b.path),
  );
  const lines = problems.map(
    (problem) =>
      `  ${file}${problem.line === undefined ? '' : `:${problem.line}`}: ${problem.path === '' ? '' : `${problem.path}: `}${problem.message}`,
  );
  const count = problems.length === 1 ? 'a problem' : `${problems.length} problems`;
  return firnError(
    'FIRN_E_FLEET_INVALID',
    `the fleet inventory ${file} has ${count}:\n${lines.join('\n')}`,
    {
      hint: 'every key is described in docs/fleet.md; editors can check the file with docs/firn.schema.json',
      details: { file, problems },
    },
  );
}

// ── helpers for commands ───────────────────────────────────────────────────────────────────────

export function hasRole(host: Host, role: Role): boolean {
  return host.roles.includes(role);
}

export function buildersOf(fleet: Fleet): Host[] {
  return fleet.hosts.filter((host) => hasRole(host, 'builder'));
}

/** The host named `name`; FIRN_E_FLEET_HOST_UNKNOWN (with the closest name) if there is none. */
export function findHost(fleet: Fleet, name: string): Host {
  const host = fleet.hosts.find((candidate) => candidate.name === name);
  if (host !== undefined) return host;
  const names = fleet.hosts.map((candidate) => candidate.name);
  const match = closest(name, names);
  throw firnError('FIRN_E_FLEET_HOST_UNKNOWN', `no host ${JSON.stringify(name)} in ${fleet.file}`, {
    hint:
      match !== undefined
        ? `did you mean "${match}"?`
        : names.length === 0
          ? 'the inventory lists no hosts yet: add a [hosts.NAME] table'
          : `the hosts are: ${names.join(', ')}`,
  });
}

/**
 * The hosts that `selectors` name, in inventory order, each once: a host name, or `@tag` for
 * every host with that tag. No selectors means every host.
 */
export function selectHosts(fleet: Fleet, selectors: readonly string[]): Host[] {
  if (selectors.length === 0) return [...fleet.hosts];
  const chosen = new Set<Host>();
  for (const selector of selectors) {
    if (selector.startsWith('@')) {
      const tag = selector.slice(1);
      const tagged = fleet.hosts.filter((host) => host.tags.includes(tag));
      if (tagged.length === 0) {
        const tags = new Set(fleet.hosts.flatMap((host) => host.tags));
        const match = closest(tag, tags);
        throw firnError('FIRN_E_FLEET_HOST_UNKNOWN', `no host has the tag ${JSON.stringify(tag)}`, {
          hint:
            match !== undefined
              ? `did you mean "@${match}"?`
              : `the tags are: ${[...tags].join(', ') || '(none)'}`,
        });
      }
      for (const host of tagged) chosen.add(host);
    } else chosen.add(findHost(fleet, selector));
  }
  return fleet.hosts.filter((host) => chosen.has(host));
}

/** `~/x` → `$HOME/x` (ssh does this for -i and -F; firn does it before reading such files). */
export function expandHome(path: string, env: NodeJS.ProcessEnv = process.env): string {
  if (path !== '~' && !path.startsWith('~/')) return path;
  const home = nonEmpty(env.HOME) ?? homedir();
  return join(home, path.slice(1));
}

function unique<T>(items: readonly T[]): T[] {
  return [...new Set(items)];
}

function sortedUnique(items: readonly string[]): string[] {
  return unique(items).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

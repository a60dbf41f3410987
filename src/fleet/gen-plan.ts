/**
 * What each host's Nix must be told, decided once from its roles; `firn gen nix-conf` and
 * `firn gen nixos` only render this plan. The rules:
 *
 * - every host: the cache in its substituters and the cache's key in trusted-public-keys, and a
 *   30 s negative narinfo TTL (Nix's default of an hour would make a host rebuild a path that
 *   another host pushed a minute after it first asked);
 * - builders: accept builds from the coordinator (the SSH user is a trusted user, the declared
 *   features are system features) and push what they build (netrc for the token, `firn hook` as
 *   Nix's post-build-hook, drained to the cache); they never pass builds on (`builders =`),
 *   which would bounce a build the coordinator placed on them to another machine;
 * - every other host starts builds (a target running nixos-rebuild, the operator's laptop):
 *   Nix's remote builds go to the fleet's builders (`builders = @/etc/nix/machines`) and the
 *   builders fetch inputs from the cache themselves (`builders-use-substitutes`);
 * - the cache host runs `firn serve`.
 */
import type { Fleet, Host } from './inventory.ts';
import { buildersOf, hasRole } from './inventory.ts';

/** Seconds Nix remembers that a cache lacks a path. */
export const NEGATIVE_TTL = 30;
export const DEFAULT_HOOK = '/usr/local/bin/firn-hook';
export const DEFAULT_NETRC_FILE = '/etc/nix/netrc';
export const DEFAULT_MACHINES_FILE = '/etc/nix/machines';

export interface HostPlan {
  readonly host: Host;
  /** Undefined when the inventory has no [cache]. */
  readonly cacheUrl: string | undefined;
  readonly cacheKey: string | undefined;
  /** Builds for others: trusted user, system features, no onward builders. */
  readonly builds: boolean;
  /** Pushes what it builds: netrc, post-build-hook, drain. A builder, with a cache to push to. */
  readonly pushes: boolean;
  /** A user to add to trusted-users (the builders' SSH user unless it is root). */
  readonly trustedUser: string | undefined;
  /** Features and mandatory features, for Nix's system-features. */
  readonly systemFeatures: readonly string[];
  /** The builders this host sends its own builds to (empty for builders). */
  readonly remoteBuilders: readonly Host[];
  /** Runs `firn serve`. */
  readonly servesCache: boolean;
}

export function planHost(fleet: Fleet, host: Host): HostPlan {
  const builds = hasRole(host, 'builder');
  return {
    host,
    cacheUrl: fleet.cache?.url,
    cacheKey: fleet.cache?.publicKey,
    builds,
    pushes: builds && fleet.cache !== undefined,
    trustedUser: builds && host.ssh.user !== 'root' ? host.ssh.user : undefined,
    systemFeatures: builds
      ? [...new Set([...host.features, ...host.mandatoryFeatures])].sort()
      : [],
    remoteBuilders: builds ? [] : buildersOf(fleet).filter((builder) => builder !== host),
    servesCache: hasRole(host, 'cache'),
  };
}

/** The `host:port` a cache host's `firn serve` listens on, from the cache URL's port. */
export function cacheListen(cacheUrl: string): { listen: string; portFromUrl: boolean } {
  const url = new URL(cacheUrl);
  return url.port === ''
    ? { listen: '0.0.0.0:5000', portFromUrl: false }
    : { listen: `0.0.0.0:${url.port}`, portFromUrl: true };
}

/** Text for a `#` comment line: one line, and no `;` (which ends a machines-file entry). */
export function commentSafe(text: string): string {
  return text.replace(/[\r\n;]+/g, ' ');
}

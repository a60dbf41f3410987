/**
 * Parsing what a host's tools print, for the doctor's checks: `nix show-config` (the settings
 * Nix really uses, after every nix.conf and default), `nix-store --version`, `df -Pk`.
 * Pure functions, so the parsing is tested without a host.
 */

/** `nix show-config` text (`name = value` lines) → settings by name. */
export function parseShowConfig(text: string): Map<string, string> {
  const settings = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z0-9_-]+) =(?: (.*))?$/.exec(line.trimEnd());
    if (match?.[1] === undefined) continue;
    settings.set(match[1], (match[2] ?? '').trim());
  }
  return settings;
}

/** A list setting (`substituters`, `trusted-users`, …) as its words. */
export function settingList(settings: ReadonlyMap<string, string>, name: string): string[] {
  const value = settings.get(name) ?? '';
  return value.split(/\s+/).filter((word) => word !== '');
}

export interface NixVersion {
  readonly text: string;
  readonly parts: readonly number[];
}

/** `nix-store (Nix) 2.8.0` (or `nix (Nix) 2.18.1`, `… 2.24.0pre…`) → 2.8.0. */
export function parseNixVersion(output: string): NixVersion | undefined {
  const match = /\(Nix\) (\d+(?:\.\d+)*)(\S*)/.exec(output);
  if (match?.[1] === undefined) return undefined;
  return { text: match[1] + (match[2] ?? ''), parts: match[1].split('.').map(Number) };
}

/** Negative, zero or positive as `a` is older than, equal to or newer than `b`. */
export function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const difference = (a[i] ?? 0) - (b[i] ?? 0);
    if (difference !== 0) return difference;
  }
  return 0;
}

export interface DiskSpace {
  readonly availableBytes: number;
  readonly sizeBytes: number;
  /** df's own Capacity (used / (used + available), so reserved blocks do not count). */
  readonly usedPercent: number;
  readonly mountPoint: string;
}

/** The data line of `df -Pk PATH` (POSIX format: sizes in KiB, mount point last). */
export function parseDf(output: string): DiskSpace | undefined {
  const lines = output.trim().split('\n');
  const fields = lines.at(-1)?.trim().split(/\s+/) ?? [];
  if (lines.length < 2 || fields.length < 6) return undefined;
  const size = Number(fields[1]);
  const available = Number(fields[3]);
  const usedPercent = Number(fields[4]?.replace(/%$/, ''));
  if (![size, available, usedPercent].every(Number.isFinite)) return undefined;
  return {
    sizeBytes: size * 1024,
    availableBytes: available * 1024,
    usedPercent,
    mountPoint: fields.slice(5).join(' '),
  };
}

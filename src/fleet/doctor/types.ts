/**
 * What `firn doctor` reports: per host, one result per check, each ✓ or ✗ with what was seen
 * (`detail`) and, for a ✗, the one-line fix (`hint`). The check ids are stable: scripts read
 * them from `--json`, and docs/fleet.md documents each.
 */

export const CHECK_IDS = [
  'ssh',
  'nix-version',
  'store-writable',
  'systems',
  'features',
  'trusted-user',
  'cache-reachable',
  'cache-key',
  'substituter',
  'push-token',
  'negative-ttl',
  'disk',
  'round-trip',
] as const;

export type CheckId = (typeof CHECK_IDS)[number];

export interface CheckResult {
  readonly id: CheckId;
  readonly ok: boolean;
  /** What was found, one line: `2.8.0`, `aarch64-linux is not supported (…)`. */
  readonly detail: string;
  /** The fix, one line; undefined when ok. */
  readonly hint: string | undefined;
}

export interface HostReport {
  readonly name: string;
  readonly address: string;
  readonly roles: readonly string[];
  readonly ok: boolean;
  /** In CHECK_IDS order; only the checks that apply to the host (and none after a failed ssh). */
  readonly checks: readonly CheckResult[];
  /** Wall time of the host's checks, for the "never holds up the others" promise. */
  readonly ms: number;
}

export interface DoctorReport {
  readonly ok: boolean;
  readonly hosts: readonly HostReport[];
}

export function pass(id: CheckId, detail: string): CheckResult {
  return { id, ok: true, detail, hint: undefined };
}

export function fail(id: CheckId, detail: string, hint: string): CheckResult {
  return { id, ok: false, detail, hint };
}

/** Sorts results into CHECK_IDS order, whatever order the checks finished in. */
export function inCheckOrder(results: readonly CheckResult[]): CheckResult[] {
  return [...results].sort((a, b) => CHECK_IDS.indexOf(a.id) - CHECK_IDS.indexOf(b.id));
}

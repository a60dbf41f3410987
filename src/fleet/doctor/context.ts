/**
 * What every check of one host gets: the host, its plan (the same role rules `firn gen` writes
 * from), the shared SSH session, and the host's Nix settings, fetched once with
 * `nix show-config` however many checks read them.
 */
import type { HostPlan } from '../gen-plan.ts';
import type { Fleet, Host } from '../inventory.ts';
import { parseShowConfig } from './nix-facts.ts';
import { shellQuote, type SshSession } from './ssh-session.ts';
import { fail, type CheckId, type CheckResult } from './types.ts';

export type NixSettings =
  | { readonly ok: true; readonly settings: ReadonlyMap<string, string> }
  | { readonly ok: false; readonly detail: string };

export interface CheckContext {
  readonly fleet: Fleet;
  readonly host: Host;
  readonly plan: HostPlan;
  readonly session: SshSession;
  /** The settings Nix uses on the host, as the SSH user sees them. */
  readonly nixSettings: () => Promise<NixSettings>;
}

/** `nix show-config` works on Nix 2.4 and later, with nix-command enabled or not. */
export const SHOW_CONFIG = shellQuote([
  'nix',
  '--extra-experimental-features',
  'nix-command',
  'show-config',
]);

export function settingsLoader(session: SshSession): () => Promise<NixSettings> {
  let loaded: Promise<NixSettings> | undefined;
  return () => {
    loaded ??= (async (): Promise<NixSettings> => {
      const result = await session.run(SHOW_CONFIG);
      if (result.timedOut) return { ok: false, detail: '`nix show-config` did not finish in 30 s' };
      if (result.code !== 0) {
        return { ok: false, detail: `\`nix show-config\` failed: ${tail(result.stderr)}` };
      }
      return { ok: true, settings: parseShowConfig(result.stdout.toString('utf8')) };
    })();
    return loaded;
  };
}

/** A check that needs the settings fails with the reason they could not be read. */
export function noSettings(id: CheckId, settings: { readonly detail: string }): CheckResult {
  return fail(
    id,
    settings.detail,
    'make `nix show-config` work for the SSH user on the host (see the nix-version check)',
  );
}

/** The last meaningful line of a program's stderr, for a one-line detail. */
export function tail(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  return lines.at(-1) ?? '(no message)';
}

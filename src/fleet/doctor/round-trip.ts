/**
 * The round trip: the proof that everything else adds up. firn doctor makes a tiny store path
 * itself (a text file holding a fresh nonce, so no host can have it yet), uploads it to the
 * cache with a push token from here, and asks each host to `nix-store --realise` it: that
 * succeeds only if the host reaches the cache, uses it as a substituter and trusts the key the
 * cache signed it with, as the running nix-daemon sees its settings (which `nix show-config`
 * cannot tell).
 *
 * No local Nix store is needed: the path, its NAR and narinfo are computed here (the path is
 * the one `nix-store --add` would make of the file: a recursive sha256 "source" path).
 */
import { createHash, randomBytes } from 'node:crypto';
import { defaultNetrcFile } from '../../config/push-config.ts';
import { findCredentials } from '../../push/credentials.ts';
import { hashBytes, type Hash } from '../../nix/hash.ts';
import { encodeStrings, NAR_MAGIC } from '../../nix/nar-format.ts';
import { serializeNarInfo } from '../../nix/narinfo.ts';
import { encodeNix32 } from '../../nix/nix-base32.ts';
import { DEFAULT_STORE_DIR } from '../../nix/store-path.ts';
import { tail, type CheckContext } from './context.ts';
import { shellQuote } from './ssh-session.ts';
import { fail, pass, type CheckResult } from './types.ts';

export const PROBE_NAME = 'firn-doctor-probe';

export interface Probe {
  readonly storePath: string;
  readonly nar: Buffer;
  readonly narHash: Hash;
  readonly narInfo: string;
}

/** The NAR of one regular, non-executable file. */
export function fileNar(contents: Buffer): Buffer {
  return encodeStrings(NAR_MAGIC, '(', 'type', 'regular', 'contents', contents, ')');
}

/** Nix's makeStorePath: sha256 of the fingerprint, folded to 20 bytes, in nix-base32. */
export function makeStorePath(type: string, hash: Hash, name: string): string {
  const fingerprint = `${type}:${hash.algorithm}:${hash.digest.toString('hex')}:${DEFAULT_STORE_DIR}:${name}`;
  const digest = createHash('sha256').update(fingerprint).digest();
  const folded = Buffer.alloc(20);
  for (let i = 0; i < digest.length; i++) folded[i % 20] = (folded[i % 20] ?? 0) ^ (digest[i] ?? 0);
  return `${DEFAULT_STORE_DIR}/${encodeNix32(folded)}-${name}`;
}

/** The path `nix-store --add` makes of a file named PROBE_NAME holding `contents`. */
export function makeProbe(contents: string): Probe {
  const nar = fileNar(Buffer.from(contents, 'utf8'));
  const narHash = hashBytes('sha256', nar);
  const storePath = makeStorePath('source', narHash, PROBE_NAME);
  const narInfo = serializeNarInfo({
    storePath,
    url: `nar/${encodeNix32(narHash.digest)}.nar`,
    compression: 'none',
    fileHash: narHash,
    fileSize: nar.length,
    narHash,
    narSize: nar.length,
    references: [],
    // No CA field: Nix would take a content-addressed path without checking any signature,
    // and the round trip is to prove that the host trusts the key the cache signs with.
    sigs: [],
  });
  return { storePath, nar, narHash, narInfo };
}

export type PushOutcome =
  | { readonly ok: true; readonly storePath: string }
  | { readonly ok: false; readonly detail: string; readonly hint: string };

const TOKEN_HINT =
  'give firn doctor a push token: FIRN_TOKEN=… or --token-file FILE (`firn cache token create --scope push` on the cache box), or skip this with --no-round-trip';

/** Makes a fresh probe and uploads it (NAR, then narinfo) with a push token found here. */
export async function pushProbe(options: {
  readonly cacheUrl: string;
  readonly env: NodeJS.ProcessEnv;
  readonly tokenFile?: string | undefined;
}): Promise<PushOutcome> {
  const netrcFlag = options.env.FIRN_NETRC_FILE;
  const credentials = await findCredentials({
    tokenFileFlag: options.tokenFile,
    env: options.env,
    netrcFile:
      netrcFlag === undefined || netrcFlag === '' ? defaultNetrcFile(options.env) : netrcFlag,
    host: new URL(options.cacheUrl).hostname,
  });
  if (credentials.authorization === undefined) {
    return { ok: false, detail: `no push token here (${credentials.source})`, hint: TOKEN_HINT };
  }
  const probe = makeProbe(
    `firn doctor round trip ${new Date().toISOString()} ${randomBytes(8).toString('hex')}\n`,
  );
  const upload = async (path: string, body: Buffer | string, type: string): Promise<string> => {
    try {
      const response = await fetch(`${options.cacheUrl}/${path}`, {
        method: 'PUT',
        headers: { authorization: credentials.authorization ?? '', 'content-type': type },
        body,
        signal: AbortSignal.timeout(15_000),
      });
      const text = (await response.text()).trim().split('\n')[0] ?? '';
      return response.ok ? '' : `PUT ${path}: HTTP ${response.status} ${text}`;
    } catch (error) {
      const cause = (error as { cause?: { message?: string } }).cause?.message;
      return `PUT ${path}: ${cause ?? (error instanceof Error ? error.message : String(error))}`;
    }
  };
  const narFailure = await upload(
    `nar/${encodeNix32(probe.narHash.digest)}.nar`,
    probe.nar,
    'application/x-nix-nar',
  );
  const failure =
    narFailure !== ''
      ? narFailure
      : await upload(`${hashPartOf(probe.storePath)}.narinfo`, probe.narInfo, 'text/x-nix-narinfo');
  if (failure === '') return { ok: true, storePath: probe.storePath };
  return {
    ok: false,
    detail: `could not push a test path from here with ${credentials.source}: ${failure}`,
    hint: /HTTP 40[13]/.test(failure)
      ? TOKEN_HINT
      : 'check that the cache accepts uploads (`firn serve` logs say why)',
  };
}

function hashPartOf(storePath: string): string {
  return storePath.slice(DEFAULT_STORE_DIR.length + 1).slice(0, 32);
}

/** Substitutes the pushed probe on the host, then deletes it there again. */
export function realiseScript(storePath: string): string {
  const path = shellQuote([storePath]);
  return [
    `nix-store --realise ${path} || exit $?`,
    `nix-store --delete ${path} >/dev/null 2>&1 || true`,
  ].join('\n');
}

export async function checkRoundTrip(
  ctx: CheckContext,
  pushed: Promise<PushOutcome>,
  cacheChecks: Promise<readonly CheckResult[]>,
): Promise<CheckResult> {
  const outcome = await pushed;
  if (!outcome.ok) return fail('round-trip', outcome.detail, outcome.hint);
  const result = await ctx.session.run(shellQuote(['sh', '-c', realiseScript(outcome.storePath)]), {
    timeoutMs: 60_000,
  });
  if (!result.timedOut && result.code === 0) {
    return pass('round-trip', `pushed ${outcome.storePath} from here; the host substituted it`);
  }
  const failed = (await cacheChecks).filter((check) => !check.ok).map((check) => check.id);
  const said = result.timedOut ? 'timed out after 60 s' : realiseProblem(result.stderr);
  return fail(
    'round-trip',
    `pushed ${outcome.storePath} from here; the host could not substitute it: ${said}`,
    roundTripHint(failed, result.stderr, ctx.host.name, outcome.storePath),
  );
}

/** The line of `nix-store --realise`'s complaint that says why, rather than its last line. */
export function realiseProblem(stderr: string): string {
  const lines = stderr.split('\n').map((line) => line.trim());
  if (lines.some((line) => line.startsWith("don't know how to build"))) {
    return 'no substituter offers it (Nix: "don\'t know how to build these paths")';
  }
  const telling = lines.find((line) =>
    /not signed|signature|HTTP error|unable to download|Couldn't/i.test(line),
  );
  return telling ?? tail(stderr);
}

export function roundTripHint(
  failedCacheChecks: readonly string[],
  stderr: string,
  hostName: string,
  storePath: string,
): string {
  if (failedCacheChecks.length > 0) return `fix ${failedCacheChecks.join(', ')} first`;
  if (/not signed|signature/i.test(stderr)) {
    return "the host's Nix does not trust the key the cache signs with: check the inventory's [cache] public-key against `firn cache key`, then restart nix-daemon";
  }
  if (/HTTP error 40[13]/.test(stderr)) {
    return "the cache wants a read token: add it to the host's netrc-file for the cache's host name";
  }
  if (stderr.includes("don't know how to build")) {
    return `the nix-daemon on ${hostName} does not use the cache although nix.conf says so: restart it (systemctl restart nix-daemon) so it reads nix.conf again`;
  }
  return `restart nix-daemon on ${hostName} so it reads nix.conf again, then \`nix-store --realise ${storePath}\` there says why`;
}

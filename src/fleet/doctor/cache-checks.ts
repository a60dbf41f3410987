/**
 * The host and the fleet's cache: can the host reach it, does its Nix trust the cache's key and
 * use it as a substituter, and (for builders, which push) does the cache accept the token in
 * the host's netrc file for uploads.
 */
import { netrcEntryFor, parseNetrc } from '../../push/netrc.ts';
import { noSettings, tail, type CheckContext } from './context.ts';
import { settingList } from './nix-facts.ts';
import { shellQuote } from './ssh-session.ts';
import { fail, pass, type CheckResult } from './types.ts';

// ── cache-reachable ──────────────────────────────────────────────────────────────────────────

/** curl when the host has it (NixOS always does); otherwise Nix's own `nix store ping`. */
export function reachScript(cacheUrl: string): string {
  const infoUrl = `${cacheUrl}/nix-cache-info`;
  return [
    'if command -v curl >/dev/null 2>&1; then',
    `  code=$(curl -sS -o /dev/null -w '%{http_code}' --connect-timeout 5 --max-time 10 ${shellQuote([infoUrl])}) || { echo "curl $code"; exit 1; }`,
    '  echo "curl $code"',
    'else',
    `  nix --extra-experimental-features nix-command store ping --option download-attempts 1 --store ${shellQuote([cacheUrl])} >/dev/null && echo "nix 200"`,
    'fi',
  ].join('\n');
}

export async function checkCacheReachable(
  ctx: CheckContext,
  cacheUrl: string,
): Promise<CheckResult> {
  const result = await ctx.session.run(shellQuote(['sh', '-c', reachScript(cacheUrl)]), {
    timeoutMs: 20_000,
  });
  return evaluateReach(cacheUrl, result.code, result.stdout.toString('utf8'), result.stderr);
}

export function evaluateReach(
  cacheUrl: string,
  code: number,
  stdout: string,
  stderr: string,
): CheckResult {
  const [tool = '', status = ''] = stdout.trim().split(/\s+/);
  const where = `${cacheUrl}/nix-cache-info`;
  const unreachable = `make ${new URL(cacheUrl).host} reachable from the host: is \`firn serve\` running there, listening on that address and port, and the firewall open ([cache] url in the inventory)?`;
  if (code === 0 && status === '200')
    return pass('cache-reachable', `HTTP 200 from ${where} (${tool})`);
  if (code === 0 && (status === '401' || status === '403')) {
    return pass(
      'cache-reachable',
      `HTTP ${status} from ${where} (${tool}): a private cache; the round trip checks the host's read token`,
    );
  }
  if (code === 0 && status !== '' && status !== '000') {
    return fail(
      'cache-reachable',
      `HTTP ${status} from ${where}: not a binary cache`,
      'check the [cache] url in the inventory (scheme, host, port, no extra path)',
    );
  }
  return fail(
    'cache-reachable',
    `cannot fetch ${where} from the host: ${tail(stderr)}`,
    unreachable,
  );
}

// ── cache-key ────────────────────────────────────────────────────────────────────────────────

export async function checkCacheKey(ctx: CheckContext): Promise<CheckResult> {
  const settings = await ctx.nixSettings();
  if (!settings.ok) return noSettings('cache-key', settings);
  return evaluateCacheKey(ctx.plan.cacheKey, ctx.host.name, settings.settings);
}

export function evaluateCacheKey(
  cacheKey: string | undefined,
  hostName: string,
  settings: ReadonlyMap<string, string>,
): CheckResult {
  if (cacheKey === undefined) {
    return fail(
      'cache-key',
      'the inventory has no [cache] public-key, so nothing says which key to trust',
      'add public-key = "…" under [cache] in the inventory (`firn cache key` on the cache box prints it)',
    );
  }
  const trusted = settingList(settings, 'trusted-public-keys');
  const add = `add \`extra-trusted-public-keys = ${cacheKey}\` to nix.conf (\`firn gen nix-conf --host ${hostName}\`) and restart nix-daemon`;
  if (trusted.includes(cacheKey)) return pass('cache-key', `${cacheKey} is trusted`);
  const name = cacheKey.slice(0, cacheKey.indexOf(':') + 1);
  const sameName = trusted.find((key) => key.startsWith(name));
  if (sameName !== undefined) {
    return fail(
      'cache-key',
      `trusts ${sameName}, not the cache's key ${cacheKey}`,
      `replace ${sameName} in trusted-public-keys: ${add}`,
    );
  }
  return fail(
    'cache-key',
    `${cacheKey} is not in trusted-public-keys (${trusted.join(' ') || 'none'})`,
    add,
  );
}

// ── substituter ──────────────────────────────────────────────────────────────────────────────

export async function checkSubstituter(ctx: CheckContext, cacheUrl: string): Promise<CheckResult> {
  const settings = await ctx.nixSettings();
  if (!settings.ok) return noSettings('substituter', settings);
  return evaluateSubstituter(cacheUrl, ctx.host.name, settings.settings);
}

/** A store URL without its `?params` and trailing slashes, for comparing. */
function storeUrlBase(url: string): string {
  return url.replace(/\?.*$/, '').replace(/\/+$/, '');
}

export function evaluateSubstituter(
  cacheUrl: string,
  hostName: string,
  settings: ReadonlyMap<string, string>,
): CheckResult {
  const substituters = settingList(settings, 'substituters');
  const found = substituters.find((url) => storeUrlBase(url) === storeUrlBase(cacheUrl));
  const add = `add \`extra-substituters = ${cacheUrl}\` to nix.conf (\`firn gen nix-conf --host ${hostName}\`) and restart nix-daemon`;
  if (found === undefined) {
    const onlyTrusted = settingList(settings, 'trusted-substituters').some(
      (url) => storeUrlBase(url) === storeUrlBase(cacheUrl),
    );
    return fail(
      'substituter',
      `${cacheUrl} is not in substituters (${substituters.join(' ') || 'none'})${onlyTrusted ? '; it is only a trusted-substituter, which Nix uses only when asked' : ''}`,
      add,
    );
  }
  if (settings.get('substitute') === 'false') {
    return fail(
      'substituter',
      '`substitute = false`: Nix substitutes from no cache',
      'remove `substitute = false` from nix.conf',
    );
  }
  return pass('substituter', `${found} is a substituter`);
}

// ── push-token ───────────────────────────────────────────────────────────────────────────────

/** A hash part no real path has; a PUT of a narinfo under it never stores anything. */
const NO_PATH_HASH = '00000000000000000000000000000000';

/** Prints the netrc file; through `sudo -n` when the SSH user cannot read it (it is root's). */
export function netrcScript(file: string): string {
  const quoted = shellQuote([file]);
  return [
    `if [ ! -e ${quoted} ]; then echo 'no such file' >&2; exit 3; fi`,
    `if [ -r ${quoted} ]; then exec cat -- ${quoted}; fi`,
    `exec sudo -n cat -- ${quoted}`,
  ].join('\n');
}

export async function checkPushToken(ctx: CheckContext, cacheUrl: string): Promise<CheckResult> {
  const settings = await ctx.nixSettings();
  if (!settings.ok) return noSettings('push-token', settings);
  const file = settings.settings.get('netrc-file') ?? '/etc/nix/netrc';
  const cacheHost = new URL(cacheUrl).hostname;
  const tokenHint = `make a push token on the cache box (\`firn cache token create --name ${ctx.host.name} --scope push\`) and write \`machine ${cacheHost} login firn password <token>\` to ${file} (mode 0600)`;
  const read = await ctx.session.run(shellQuote(['sh', '-c', netrcScript(file)]));
  if (read.code === 3) {
    return fail('push-token', `netrc-file ${file} does not exist`, tokenHint);
  }
  if (read.code !== 0) {
    return fail(
      'push-token',
      `cannot read ${file} as ${ctx.host.ssh.user}: ${read.timedOut ? 'timed out' : tail(read.stderr)}`,
      `let firn doctor read it: ssh in as root (ssh-user = "root" for ${ctx.host.name}) or allow \`sudo -n cat ${file}\``,
    );
  }
  const entry = netrcEntryFor(parseNetrc(read.stdout.toString('utf8')), cacheHost);
  if (entry?.password === undefined) {
    return fail('push-token', `${file} has no entry with a password for ${cacheHost}`, tokenHint);
  }
  if (entry.login === undefined) {
    return fail(
      'push-token',
      `the ${cacheHost} entry of ${file} has no login, so curl (and Nix) send no credentials`,
      `write the entry as \`machine ${cacheHost} login firn password <token>\``,
    );
  }
  const status = await putInvalidNarInfo(cacheUrl, `${entry.login}:${entry.password}`);
  return evaluatePushStatus(status, file, cacheHost, tokenHint);
}

/**
 * Proves push scope without storing anything: the cache checks the token before it reads the
 * body, so an invalid narinfo gets 400 from a push token and 401/403 from anything less.
 */
export async function putInvalidNarInfo(
  cacheUrl: string,
  credentials: string,
): Promise<number | string> {
  try {
    const response = await fetch(`${cacheUrl}/${NO_PATH_HASH}.narinfo`, {
      method: 'PUT',
      headers: {
        authorization: `Basic ${Buffer.from(credentials).toString('base64')}`,
        'content-type': 'text/x-nix-narinfo',
      },
      body: 'firn doctor: this is not a narinfo\n',
      signal: AbortSignal.timeout(10_000),
    });
    await response.arrayBuffer();
    return response.status;
  } catch (error) {
    const cause = (error as { cause?: { message?: string } }).cause?.message;
    return error instanceof Error ? (cause ?? error.message) : String(error);
  }
}

export function evaluatePushStatus(
  status: number | string,
  file: string,
  cacheHost: string,
  tokenHint: string,
): CheckResult {
  if (status === 400) {
    return pass('push-token', `the cache accepts the ${cacheHost} token of ${file} for uploads`);
  }
  if (status === 401) {
    return fail(
      'push-token',
      `the cache refuses the ${cacheHost} token of ${file} (HTTP 401: unknown or revoked)`,
      tokenHint,
    );
  }
  if (status === 403) {
    return fail(
      'push-token',
      `the ${cacheHost} token of ${file} may only read (HTTP 403)`,
      tokenHint,
    );
  }
  if (typeof status === 'string') {
    return fail(
      'push-token',
      `cannot reach the cache from here to try the token: ${status}`,
      'run firn doctor from a machine that reaches the cache URL',
    );
  }
  return fail(
    'push-token',
    `unexpected HTTP ${status} for an upload with the ${cacheHost} token of ${file}`,
    'is [cache] url a firn cache? check `firn serve` on the cache box',
  );
}

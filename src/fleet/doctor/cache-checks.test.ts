import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  evaluateCacheKey,
  evaluatePushStatus,
  evaluateReach,
  evaluateSubstituter,
  netrcScript,
  reachScript,
} from './cache-checks.ts';
import { parseShowConfig } from './nix-facts.ts';

const URL = 'http://ser5.internal:5000';
const KEY = 'ser5-1:7L4/e7RqMTG7uxqBtLEeQjrkUNPDoRtmguMMGpVONrg=';

test('cache-reachable: 200 passes; a private cache answering 401 is reachable too', () => {
  assert.deepEqual(evaluateReach(URL, 0, 'curl 200\n', ''), {
    id: 'cache-reachable',
    ok: true,
    detail: `HTTP 200 from ${URL}/nix-cache-info (curl)`,
    hint: undefined,
  });
  assert.equal(evaluateReach(URL, 0, 'curl 401\n', '').ok, true);
  assert.equal(
    evaluateReach(URL, 0, 'nix 200\n', '').detail,
    `HTTP 200 from ${URL}/nix-cache-info (nix)`,
  );
});

test('cache-reachable: a 404 is not a cache; no connection says what to check', () => {
  const notCache = evaluateReach(URL, 0, 'curl 404\n', '');
  assert.equal(notCache.ok, false);
  assert.equal(notCache.detail, `HTTP 404 from ${URL}/nix-cache-info: not a binary cache`);
  const refused = evaluateReach(
    URL,
    1,
    'curl 000\n',
    'curl: (7) Failed to connect to ser5.internal port 5000: Connection refused\n',
  );
  assert.equal(
    refused.detail,
    `cannot fetch ${URL}/nix-cache-info from the host: curl: (7) Failed to connect to ser5.internal port 5000: Connection refused`,
  );
  assert.match(
    refused.hint ?? '',
    /^make ser5\.internal:5000 reachable from the host: is `firn serve` running/,
  );
});

test('the reach script quotes the URL and falls back to nix store ping', () => {
  const script = reachScript("http://h:1/a'b");
  assert.match(
    script,
    /curl -sS -o \/dev\/null -w '%\{http_code\}' .* 'http:\/\/h:1\/a'\\''b\/nix-cache-info'/,
  );
  assert.match(
    script,
    /nix --extra-experimental-features nix-command store ping .* --store 'http:\/\/h:1\/a'\\''b'/,
  );
});

test('cache-key: trusted passes; missing, replaced or undeclared keys fail with the line to add', () => {
  const trusted = parseShowConfig(
    `trusted-public-keys = cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY= ${KEY}\n`,
  );
  assert.equal(evaluateCacheKey(KEY, 'opi01', trusted).ok, true);
  const absent = evaluateCacheKey(KEY, 'opi01', parseShowConfig('trusted-public-keys = \n'));
  assert.deepEqual(absent, {
    id: 'cache-key',
    ok: false,
    detail: `${KEY} is not in trusted-public-keys (none)`,
    hint: `add \`extra-trusted-public-keys = ${KEY}\` to nix.conf (\`firn gen nix-conf --host opi01\`) and restart nix-daemon`,
  });
  const rotated = evaluateCacheKey(
    KEY,
    'opi01',
    parseShowConfig('trusted-public-keys = ser5-1:AAAAe7RqMTG7uxqBtLEeQjrkUNPDoRtmguMMGpVONrg=\n'),
  );
  assert.equal(
    rotated.detail,
    `trusts ser5-1:AAAAe7RqMTG7uxqBtLEeQjrkUNPDoRtmguMMGpVONrg=, not the cache's key ${KEY}`,
  );
  assert.match(rotated.hint ?? '', /^replace ser5-1:AAAA/);
  const undeclared = evaluateCacheKey(undefined, 'opi01', trusted);
  assert.equal(undeclared.ok, false);
  assert.match(undeclared.hint ?? '', /public-key = "…" under \[cache\]/);
});

test('substituter: the cache URL, ignoring ?params and a trailing slash', () => {
  const listed = parseShowConfig(`substituters = https://cache.nixos.org/ ${URL}/?priority=10\n`);
  assert.deepEqual(evaluateSubstituter(URL, 'eagle', listed), {
    id: 'substituter',
    ok: true,
    detail: `${URL}/?priority=10 is a substituter`,
    hint: undefined,
  });
  const onlyTrusted = evaluateSubstituter(
    URL,
    'eagle',
    parseShowConfig(`substituters = https://cache.nixos.org/\ntrusted-substituters = ${URL}\n`),
  );
  assert.equal(onlyTrusted.ok, false);
  assert.match(onlyTrusted.detail, /only a trusted-substituter/);
  assert.equal(
    onlyTrusted.hint,
    `add \`extra-substituters = ${URL}\` to nix.conf (\`firn gen nix-conf --host eagle\`) and restart nix-daemon`,
  );
  const off = evaluateSubstituter(
    URL,
    'eagle',
    parseShowConfig(`substituters = ${URL}\nsubstitute = false\n`),
  );
  assert.equal(off.ok, false);
  assert.match(off.hint ?? '', /remove `substitute = false`/);
});

test('push-token: 400 for an invalid narinfo proves push scope; 401 and 403 do not', () => {
  const hint = 'make a push token';
  assert.equal(evaluatePushStatus(400, '/etc/nix/netrc', 'ser5', hint).ok, true);
  const unknown = evaluatePushStatus(401, '/etc/nix/netrc', 'ser5', hint);
  assert.deepEqual(unknown, {
    id: 'push-token',
    ok: false,
    detail: 'the cache refuses the ser5 token of /etc/nix/netrc (HTTP 401: unknown or revoked)',
    hint,
  });
  assert.equal(
    evaluatePushStatus(403, '/etc/nix/netrc', 'ser5', hint).detail,
    'the ser5 token of /etc/nix/netrc may only read (HTTP 403)',
  );
  // A server that stores anything it is sent is not a firn cache.
  assert.match(
    evaluatePushStatus(201, '/etc/nix/netrc', 'ser5', hint).detail,
    /unexpected HTTP 201/,
  );
  assert.match(
    evaluatePushStatus('connect ECONNREFUSED', 'f', 'ser5', hint).detail,
    /cannot reach the cache from here/,
  );
});

test('the netrc script reads the file itself, else through sudo -n; exit 3 when absent', () => {
  assert.equal(
    netrcScript('/etc/nix/my netrc'),
    [
      "if [ ! -e '/etc/nix/my netrc' ]; then echo 'no such file' >&2; exit 3; fi",
      "if [ -r '/etc/nix/my netrc' ]; then exec cat -- '/etc/nix/my netrc'; fi",
      "exec sudo -n cat -- '/etc/nix/my netrc'",
    ].join('\n'),
  );
});

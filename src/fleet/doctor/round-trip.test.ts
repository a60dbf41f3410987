import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatHash } from '../../nix/hash.ts';
import { parseNarInfo } from '../../nix/narinfo.ts';
import { makeProbe, realiseProblem, realiseScript, roundTripHint } from './round-trip.ts';

test('the probe path, NAR hash and size are what nix-store --add makes of the file', () => {
  // `printf 'firn doctor probe 0\n' > firn-doctor-probe; nix-store --add firn-doctor-probe`
  // and `nix path-info --json` of the result, with Nix 2.8.
  const probe = makeProbe('firn doctor probe 0\n');
  assert.equal(probe.storePath, '/nix/store/7dgxa516qgpzjfdx0i1z94lljqhx699c-firn-doctor-probe');
  assert.equal(
    formatHash(probe.narHash, 'sri'),
    'sha256-pYXaqEQhM7V9AaGF/rItk4eumV3Yi0EVZ6ega0pWlo8=',
  );
  assert.equal(probe.nar.length, 136);
});

test('the probe narinfo is a valid, unsigned, input-addressed narinfo of an uncompressed NAR', () => {
  const probe = makeProbe('x\n');
  const info = parseNarInfo(probe.narInfo);
  assert.equal(info.storePath, probe.storePath);
  assert.equal(info.compression, 'none');
  assert.equal(info.narSize, probe.nar.length);
  assert.equal(info.fileSize, probe.nar.length);
  assert.equal(info.url, `nar/${formatHash(probe.narHash).slice('sha256:'.length)}.nar`);
  assert.deepEqual(info.references, []);
  assert.deepEqual(info.sigs, []);
  // Without CA, Nix must check the cache's signature: that is what the round trip proves.
  assert.equal(info.ca, undefined);
});

test('each probe is new', () => {
  assert.notEqual(makeProbe('a\n').storePath, makeProbe('b\n').storePath);
});

test('realiseScript realises, keeps its exit code, then deletes the path again', () => {
  assert.equal(
    realiseScript('/nix/store/abc-x'),
    'nix-store --realise /nix/store/abc-x || exit $?\nnix-store --delete /nix/store/abc-x >/dev/null 2>&1 || true',
  );
});

test('realiseProblem picks the line that says why', () => {
  const unsigned = `this path will be fetched (0.00 MiB download, 0.00 MiB unpacked):
  /nix/store/40mj-firn-doctor-probe
warning: the substitute for '/nix/store/40mj-firn-doctor-probe' from 'http://192.0.2.1:5000' is not signed by any of the keys in 'trusted-public-keys'
error: build of '/nix/store/40mj-firn-doctor-probe' failed
`;
  assert.match(
    realiseProblem(unsigned),
    /^warning: the substitute .* is not signed by any of the keys/,
  );
  const noSubstituter = `don't know how to build these paths:
  /nix/store/40mj-firn-doctor-probe
error: build of '/nix/store/40mj-firn-doctor-probe' failed
`;
  assert.equal(
    realiseProblem(noSubstituter),
    'no substituter offers it (Nix: "don\'t know how to build these paths")',
  );
  assert.equal(realiseProblem('error: something else\n'), 'error: something else');
});

test('the round-trip fix points at failed checks first, then at what Nix said', () => {
  assert.equal(
    roundTripHint(['cache-key', 'substituter'], '', 'h', '/p'),
    'fix cache-key, substituter first',
  );
  assert.match(roundTripHint([], 'is not signed by any of the keys', 'h', '/p'), /firn cache key/);
  assert.match(roundTripHint([], "don't know how to build these paths", 'h', '/p'), /restart it/);
  assert.match(roundTripHint([], 'HTTP error 401', 'h', '/p'), /read token/);
  assert.equal(
    roundTripHint([], 'weird', 'h', '/p'),
    'restart nix-daemon on h so it reads nix.conf again, then `nix-store --realise /p` there says why',
  );
});

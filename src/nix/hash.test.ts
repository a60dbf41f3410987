import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FirnError } from '../errors.ts';
import { formatHash, hashBytes, hashesEqual, parseHash, parseHashAlgorithm } from './hash.ts';

// The sha256 of "abc" in every form Nix 2.8 prints or reads.
const HEX = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';
const NIX32 = '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s';
const SRI = 'sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=';
const B64 = SRI.slice('sha256-'.length);

test('formats a digest in every encoding', () => {
  const hash = hashBytes('sha256', 'abc');
  assert.equal(formatHash(hash, 'base16'), `sha256:${HEX}`);
  assert.equal(formatHash(hash, 'nix32'), `sha256:${NIX32}`);
  assert.equal(formatHash(hash, 'base64'), `sha256:${B64}`);
  assert.equal(formatHash(hash, 'sri'), SRI);
  assert.equal(formatHash(hash), `sha256:${NIX32}`);
});

test('parses every form Nix accepts to the same hash', () => {
  const expected = hashBytes('sha256', 'abc');
  for (const text of [`sha256:${HEX}`, `sha256:${NIX32}`, `sha256:${B64}`, SRI]) {
    assert.ok(hashesEqual(parseHash(text), expected), text);
  }
  assert.ok(hashesEqual(parseHash(HEX, { defaultAlgorithm: 'sha256' }), expected));
  assert.ok(hashesEqual(parseHash(NIX32, { defaultAlgorithm: 'sha256' }), expected));
  assert.ok(hashesEqual(parseHash(HEX.toUpperCase(), { defaultAlgorithm: 'sha256' }), expected));
});

test('other algorithms', () => {
  assert.equal(formatHash(hashBytes('md5', 'abc'), 'nix32'), 'md5:3jgzhjhz9zjvbb0kyj7jc500ch');
  assert.equal(
    formatHash(hashBytes('sha1', 'abc'), 'nix32'),
    'sha1:kpcd173cq987hw957sx6m0868wv3x6d9',
  );
  assert.equal(
    parseHash('sha512-' + hashBytes('sha512', 'abc').digest.toString('base64')).algorithm,
    'sha512',
  );
});

test('refuses malformed hashes with typed errors', () => {
  const cases: [string, string][] = [
    ['sha256:abc', 'FIRN_E_HASH_INVALID'],
    [`sha256:${HEX}00`, 'FIRN_E_HASH_INVALID'],
    [`sha256-${B64.slice(1)}`, 'FIRN_E_HASH_INVALID'],
    [`sha3:${HEX}`, 'FIRN_E_HASH_ALGO_UNSUPPORTED'],
    [HEX, 'FIRN_E_HASH_INVALID'],
    ['', 'FIRN_E_HASH_INVALID'],
    [`sha256:${NIX32.replace('1', 'e')}`, 'FIRN_E_BASE32_INVALID'],
  ];
  for (const [text, code] of cases) {
    assert.throws(
      () => parseHash(text),
      (error: unknown) => FirnError.is(error) && error.code === code,
      text,
    );
  }
  assert.throws(() => parseHash(SRI, { expected: 'sha512' }), /expected sha512/);
  assert.throws(() => parseHashAlgorithm('crc32'), /unsupported hash algorithm/);
});

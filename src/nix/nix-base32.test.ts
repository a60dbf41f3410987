import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { FirnError } from '../errors.ts';
import { decodeNix32, encodeNix32, isNix32, nix32Length } from './nix-base32.ts';

// Vectors from the real `nix hash to-base32` (Nix 2.8).
const VECTORS: readonly [string, string][] = [
  [
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73',
  ],
  [
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s',
  ],
  ['900150983cd24fb0d6963f7d28e17f72', '3jgzhjhz9zjvbb0kyj7jc500ch'],
  ['a9993e364706816aba3e25717850c26c9cd0d89d', 'kpcd173cq987hw957sx6m0868wv3x6d9'],
];

test('encodes like nix hash to-base32', () => {
  for (const [hex, nix32] of VECTORS) assert.equal(encodeNix32(Buffer.from(hex, 'hex')), nix32);
});

test('decodes like nix', () => {
  for (const [hex, nix32] of VECTORS)
    assert.equal(decodeNix32(nix32, hex.length / 2).toString('hex'), hex);
});

test('lengths: 32 bytes are 52 characters, 20 are 32, 16 are 26', () => {
  assert.equal(nix32Length(32), 52);
  assert.equal(nix32Length(20), 32);
  assert.equal(nix32Length(16), 26);
  assert.equal(encodeNix32(Buffer.alloc(0)), '');
});

test('round trip for any bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 80 }), (bytes) => {
      const text = encodeNix32(bytes);
      assert.ok(isNix32(text));
      assert.deepEqual(new Uint8Array(decodeNix32(text, bytes.length)), bytes);
    }),
  );
});

test('rejects the letters nix-base32 leaves out, wrong lengths and overflowing bits', () => {
  const valid = VECTORS[0]?.[1] ?? '';
  for (const bad of ['e', 'o', 'u', 't', 'A', '-', 'é']) {
    assert.throws(
      () => decodeNix32(bad + valid.slice(1), 32),
      (error: unknown) => FirnError.is(error) && error.code === 'FIRN_E_BASE32_INVALID',
    );
  }
  assert.throws(() => decodeNix32(valid.slice(1), 32), /length 51, expected 52/);
  // The first character carries only the top bits of a 32-byte digest: 'z' sets bits beyond 256.
  assert.throws(() => decodeNix32('z' + valid.slice(1), 32), /bits beyond its length/);
  assert.equal(isNix32('0123456789abcdfghijklmnpqrsvwxyz'), true);
  assert.equal(isNix32('hello'), false);
});

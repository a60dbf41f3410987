import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { FirnError } from '../errors.ts';
import { NIX32_ALPHABET } from './nix-base32.ts';
import {
  controlCharIndex,
  DEFAULT_STORE_DIR,
  formatStorePath,
  isValidHashPart,
  isValidStorePathName,
  parseStorePath,
  parseStorePathBase,
  quoteForMessage,
  storePathBase,
} from './store-path.ts';

const HASH = 'c5rkdk5wafp7h9clw0nwp6nwrxppgyyc';

function assertInvalid(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(FirnError.is(error));
    assert.equal(error.code, 'FIRN_E_STORE_PATH_INVALID');
    assert.match(error.message, pattern);
    return true;
  });
}

describe('parseStorePath', () => {
  test('splits a full path into its parts and formats it back', () => {
    const path = `/nix/store/${HASH}-hello-2.12.1`;
    const parsed = parseStorePath(path);
    assert.deepEqual(parsed, { storeDir: '/nix/store', hashPart: HASH, name: 'hello-2.12.1' });
    assert.equal(formatStorePath(parsed), path);
    assert.equal(storePathBase(parsed), `${HASH}-hello-2.12.1`);
  });

  test('uses the given store directory', () => {
    const parsed = parseStorePath(`/tmp/store/${HASH}-x`, '/tmp/store');
    assert.equal(parsed.storeDir, '/tmp/store');
    assert.equal(formatStorePath(parsed), `/tmp/store/${HASH}-x`);
    assertInvalid(
      () => parseStorePath(`/nix/store/${HASH}-x`, '/tmp/store'),
      /not directly inside \/tmp\/store/,
    );
  });

  test('the default store directory is /nix/store', () => {
    assert.equal(DEFAULT_STORE_DIR, '/nix/store');
  });

  test('refuses paths outside the store, below a store path or written loosely', () => {
    assertInvalid(() => parseStorePath(`/nix/stor/${HASH}-x`), /not directly inside/);
    assertInvalid(() => parseStorePath(`${HASH}-x`), /not directly inside/);
    assertInvalid(() => parseStorePath(`/nix/store/${HASH}-x/bin/sh`), /below a store path/);
    assertInvalid(() => parseStorePath(`/nix/store/${HASH}-x/`), /below a store path/);
    assertInvalid(() => parseStorePath(`/nix/store//${HASH}-x`), /below a store path|hash part/);
    assertInvalid(() => parseStorePath('/nix/store/'), /too short/);
  });
});

describe('parseStorePathBase', () => {
  test('accepts every character Nix 2.8 allows in a name', () => {
    const name = 'AZaz09+-._?=';
    assert.equal(parseStorePathBase(`${HASH}-${name}`).name, name);
  });

  test('accepts names starting with a dot, as Nix 2.8 does', () => {
    for (const name of ['.bashrc', '.', '..', '.-x']) {
      assert.equal(parseStorePathBase(`${HASH}-${name}`).name, name);
    }
  });

  test('accepts a name of 211 characters and refuses 212', () => {
    assert.equal(parseStorePathBase(`${HASH}-${'a'.repeat(211)}`).name.length, 211);
    assertInvalid(
      () => parseStorePathBase(`${HASH}-${'a'.repeat(212)}`),
      /212 characters long, more than 211/,
    );
  });

  test('refuses an empty name, a missing dash and a short hash', () => {
    assertInvalid(() => parseStorePathBase(`${HASH}-`), /too short/);
    assertInvalid(() => parseStorePathBase(`${HASH}xname`), /not followed by "-"/);
    assertInvalid(() => parseStorePathBase(`${HASH.slice(1)}-name`), /hash part|not followed/);
  });

  test('refuses characters outside the allowed set and names the character', () => {
    for (const [name, shown] of [
      ['a b', '" "'],
      ['a/b', '"/"'],
      ['a\0b', '"\\u0000"'],
      ['ä', '"ä"'],
      ['a~', '"~"'],
      ['a:b', '":"'],
    ] as const) {
      assertInvalid(
        () => parseStorePathBase(`${HASH}-${name}`),
        new RegExp(`character ${escape(shown)}`),
      );
    }
  });

  test('refuses a hash part with letters outside nix-base32 (e, o, u, t, upper case)', () => {
    for (const bad of ['e', 'o', 'u', 't', 'A', '-']) {
      const hash = bad + HASH.slice(1);
      assertInvalid(() => parseStorePathBase(`${hash}-name`), /hash part/);
    }
  });

  test('never quotes more than a bounded part of a huge input', () => {
    const huge = `${HASH}-${'a'.repeat(100_000)}!`;
    assert.throws(
      () => parseStorePathBase(huge),
      (error: unknown) => FirnError.is(error) && error.message.length < 1000,
    );
  });
});

describe('helpers', () => {
  test('isValidHashPart', () => {
    assert.equal(isValidHashPart(HASH), true);
    assert.equal(isValidHashPart(HASH.slice(1)), false);
    assert.equal(isValidHashPart(`${HASH}0`), false);
    assert.equal(isValidHashPart(`e${HASH.slice(1)}`), false);
  });

  test('isValidStorePathName', () => {
    assert.equal(isValidStorePathName('hello-2.12'), true);
    assert.equal(isValidStorePathName(''), false);
    assert.equal(isValidStorePathName('a b'), false);
  });

  test('controlCharIndex finds C0 controls and DEL only', () => {
    assert.equal(controlCharIndex('abc'), -1);
    assert.equal(controlCharIndex('ab\rc'), 2);
    assert.equal(controlCharIndex('\x7f'), 0);
    assert.equal(controlCharIndex('ä€'), -1);
  });

  test('quoteForMessage cuts long text', () => {
    assert.equal(quoteForMessage('ab'), '"ab"');
    assert.equal(quoteForMessage('abcdef', 3), '"abc…"');
  });
});

describe('properties', () => {
  const hashPart = fc
    .array(fc.constantFrom(...NIX32_ALPHABET.split('')), { minLength: 32, maxLength: 32 })
    .map((chars) => chars.join(''));
  const name = fc
    .array(fc.constantFrom(...'abcXYZ019+-._?='.split('')), { minLength: 1, maxLength: 211 })
    .map((chars) => chars.join(''));

  test('every valid path round-trips through parse and format', () => {
    fc.assert(
      fc.property(hashPart, name, (hash, n) => {
        const path = `/nix/store/${hash}-${n}`;
        assert.equal(formatStorePath(parseStorePath(path)), path);
      }),
    );
  });

  test('arbitrary strings either parse or throw FIRN_E_STORE_PATH_INVALID', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (text) => {
        for (const candidate of [text, `/nix/store/${text}`, `${HASH}-${text}`]) {
          try {
            const parsed = parseStorePath(candidate);
            assert.equal(formatStorePath(parsed), candidate);
          } catch (error) {
            assert.ok(FirnError.is(error) && error.code === 'FIRN_E_STORE_PATH_INVALID');
          }
        }
      }),
    );
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

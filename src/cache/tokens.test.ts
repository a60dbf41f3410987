import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { SqliteIndex } from './sqlite-index.ts';
import {
  authenticate,
  createToken,
  hashToken,
  scopeAllows,
  TOKEN_PREFIX,
  tokenFromAuthorization,
} from './tokens.ts';

const basic = (userAndPassword: string): string =>
  `Basic ${Buffer.from(userAndPassword, 'utf8').toString('base64')}`;

describe('tokenFromAuthorization', () => {
  test('Basic auth carries the token as the password (what Nix sends from netrc)', () => {
    assert.equal(tokenFromAuthorization(basic('firn:firn_abc')), 'firn_abc');
    assert.equal(tokenFromAuthorization(basic(':firn_abc')), 'firn_abc');
    // RFC 7617: the user-id has no colon, so everything after the first one is the password.
    assert.equal(tokenFromAuthorization(basic('anyone:pa:ss')), 'pa:ss');
    assert.equal(tokenFromAuthorization(`basic ${basic('u:tok').slice(6)}`), 'tok');
    assert.equal(tokenFromAuthorization(`BASIC   ${basic('u:tok').slice(6)}  `), 'tok');
  });

  test('Bearer carries the token itself', () => {
    assert.equal(tokenFromAuthorization('Bearer firn_abc'), 'firn_abc');
    assert.equal(tokenFromAuthorization('bearer firn_abc'), 'firn_abc');
    assert.equal(tokenFromAuthorization('Bearer   firn_abc  '), 'firn_abc');
  });

  test('no token in missing, empty or garbage headers', () => {
    for (const header of [
      undefined,
      '',
      'Basic',
      'Bearer',
      'Bearer ',
      'Basic ',
      basic('user-without-password'),
      basic('user:'),
      'Basic !!!not-base64!!!',
      'Digest username="x", response="y"',
      'Token firn_abc',
      'firn_abc',
      '\u0000\u0001',
    ]) {
      assert.equal(tokenFromAuthorization(header), undefined, JSON.stringify(header));
    }
  });
});

describe('tokens in the index', () => {
  test('a created token authenticates by its secret; the index keeps only its hash', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'firn-tokens-'));
    const index = new SqliteIndex(join(dir, 'index.sqlite'));
    t.after(async () => {
      await index.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const { record, token } = await createToken(index, 'builder1', 'push');
    assert.ok(token.startsWith(TOKEN_PREFIX));
    assert.ok(token.length >= 40);
    assert.equal((await authenticate(index, token))?.id, record.id);
    assert.equal((await index.findToken(hashToken(token)))?.name, 'builder1');
    assert.equal(await index.findToken(token), undefined, 'the secret itself is not a key');
    assert.equal(await authenticate(index, `${token}x`), undefined);
    assert.equal(await authenticate(index, token.slice(0, -1)), undefined);
    assert.equal(await authenticate(index, ''), undefined);
    assert.equal(await authenticate(index, 'x'.repeat(10_000)), undefined);
    const other = await createToken(index, 'builder2', 'read');
    assert.notEqual(other.token, token);
  });
});

describe('scopeAllows', () => {
  test('admin implies push implies read, never the other way', () => {
    assert.equal(scopeAllows('read', 'read'), true);
    assert.equal(scopeAllows('read', 'push'), false);
    assert.equal(scopeAllows('read', 'admin'), false);
    assert.equal(scopeAllows('push', 'read'), true);
    assert.equal(scopeAllows('push', 'push'), true);
    assert.equal(scopeAllows('push', 'admin'), false);
    assert.equal(scopeAllows('admin', 'push'), true);
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { FirnError } from '../errors.ts';
import type { NarRecord, PathRecord } from './cache-index.ts';
import { SqliteIndex } from './sqlite-index.ts';

const HASH_A = 'a'.repeat(32);
const HASH_B = 'b'.repeat(32);
const HASH_C = 'c'.repeat(32);

let dir: string;
let index: SqliteIndex;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'firn-index-'));
  index = new SqliteIndex(join(dir, 'index.sqlite'));
});

afterEach(async () => {
  await index.close();
  rmSync(dir, { recursive: true, force: true });
});

function nar(name: string, fileSize = 100, createdAt = 1000): NarRecord {
  return {
    key: `nar/${name}.nar.zst`,
    compression: 'zstd',
    fileHash: `sha256:${name}`,
    fileSize,
    narHash: `sha256:nar-${name}`,
    narSize: fileSize * 2,
    createdAt,
  };
}

function path(hashPart: string, narKey: string, references: string[] = []): PathRecord {
  return {
    hashPart,
    storePath: `/nix/store/${hashPart}-p`,
    narKey,
    narHash: 'sha256:x',
    narSize: 200,
    fileSize: 100,
    references,
    deriver: undefined,
    narinfo: `StorePath: /nix/store/${hashPart}-p\n`,
    uploadedAt: 5000,
    uploadedBy: 'builder',
  };
}

describe('paths and NARs', () => {
  test('a path added is found with its references, narinfo and NAR', async () => {
    await index.putNar(nar('n1'));
    assert.equal(await index.addPath(path(HASH_A, 'nar/n1.nar.zst', [HASH_A, HASH_B])), true);
    const got = await index.getPath(HASH_A);
    assert.equal(got?.storePath, `/nix/store/${HASH_A}-p`);
    assert.deepEqual(got.references, [HASH_A, HASH_B]);
    assert.equal(got.uploadedBy, 'builder');
    assert.equal(got.deriver, undefined);
    assert.equal(await index.getNarInfo(HASH_A), `StorePath: /nix/store/${HASH_A}-p\n`);
    assert.deepEqual(await index.getNar('nar/n1.nar.zst'), nar('n1'));
    assert.equal(await index.getPath(HASH_B), undefined);
    assert.equal(await index.getNarInfo(HASH_B), undefined);
    assert.equal(await index.getNar('nar/none.nar'), undefined);
  });

  test('adding a hash part twice keeps the first and says so', async () => {
    await index.putNar(nar('n1'));
    await index.putNar(nar('n2'));
    assert.equal(await index.addPath(path(HASH_A, 'nar/n1.nar.zst')), true);
    assert.equal(await index.addPath(path(HASH_A, 'nar/n2.nar.zst', [HASH_B])), false);
    const got = await index.getPath(HASH_A);
    assert.equal(got?.narKey, 'nar/n1.nar.zst');
    assert.deepEqual(got.references, [], 'the refused insert added no references');
  });

  test('a path whose NAR row does not exist is refused (foreign key)', async () => {
    await assert.rejects(async () => index.addPath(path(HASH_A, 'nar/absent.nar')));
    assert.equal(await index.getPath(HASH_A), undefined);
  });

  test('putNar twice keeps the first record', async () => {
    await index.putNar(nar('n1', 100));
    await index.putNar(nar('n1', 999));
    assert.equal((await index.getNar('nar/n1.nar.zst'))?.fileSize, 100);
  });

  test('missing returns exactly the hash parts not held, in order', async () => {
    await index.putNar(nar('n1'));
    await index.addPath(path(HASH_B, 'nar/n1.nar.zst'));
    assert.deepEqual(await index.missing([HASH_C, HASH_B, HASH_A]), [HASH_C, HASH_A]);
    assert.deepEqual(await index.missing([]), []);
  });

  test('referrers and referencesOf exclude and include self as documented', async () => {
    await index.putNar(nar('n1'));
    await index.addPath(path(HASH_A, 'nar/n1.nar.zst'));
    await index.addPath(path(HASH_B, 'nar/n1.nar.zst', [HASH_A, HASH_B]));
    await index.addPath(path(HASH_C, 'nar/n1.nar.zst', [HASH_A]));
    assert.deepEqual((await index.referrers(HASH_A)).sort(), [HASH_B, HASH_C]);
    assert.deepEqual(await index.referrers(HASH_B), []);
    assert.deepEqual(await index.referencesOf(HASH_B), [HASH_A, HASH_B]);
  });

  test('stats count paths, NARs and their bytes', async () => {
    await index.putNar(nar('n1', 100));
    await index.putNar(nar('n2', 50));
    await index.addPath(path(HASH_A, 'nar/n1.nar.zst'));
    assert.deepEqual(await index.stats(), { paths: 1, nars: 2, narBytes: 150, narSizeTotal: 300 });
  });
});

describe('touch and flush', () => {
  test('touches are invisible until flushed, then order listPaths by last access', async () => {
    await index.putNar(nar('n1'));
    await index.addPath(path(HASH_A, 'nar/n1.nar.zst'));
    await index.addPath(path(HASH_B, 'nar/n1.nar.zst'));
    index.touch(HASH_A, 9000);
    const before = await index.listPaths();
    assert.deepEqual(
      before.map((p) => [p.hashPart, p.lastAccess]),
      [
        [HASH_A, 5000],
        [HASH_B, 5000],
      ],
    );
    await index.flushTouches();
    const after = await index.listPaths();
    assert.deepEqual(
      after.map((p) => [p.hashPart, p.lastAccess]),
      [
        [HASH_B, 5000],
        [HASH_A, 9000],
      ],
    );
  });

  test('an older touch never moves last access back; touching an unknown path is harmless', async () => {
    await index.putNar(nar('n1'));
    await index.addPath(path(HASH_A, 'nar/n1.nar.zst'));
    index.touch(HASH_A, 9000);
    await index.flushTouches();
    index.touch(HASH_A, 7000);
    index.touch(HASH_C, 7000);
    await index.flushTouches();
    assert.equal((await index.listPaths())[0]?.lastAccess, 9000);
  });

  test('close flushes pending touches', async () => {
    await index.putNar(nar('n1'));
    await index.addPath(path(HASH_A, 'nar/n1.nar.zst'));
    index.touch(HASH_A, 12_345);
    await index.close();
    index = new SqliteIndex(join(dir, 'index.sqlite'));
    assert.equal((await index.listPaths())[0]?.lastAccess, 12_345);
  });
});

describe('deleting', () => {
  test('deletePaths returns what it deleted and the NAR keys no remaining path uses', async () => {
    await index.putNar(nar('shared'));
    await index.putNar(nar('own'));
    await index.addPath(path(HASH_A, 'nar/shared.nar.zst'));
    await index.addPath(path(HASH_B, 'nar/shared.nar.zst'));
    await index.addPath(path(HASH_C, 'nar/own.nar.zst', [HASH_A]));
    const result = await index.deletePaths([HASH_A, HASH_C, 'd'.repeat(32)]);
    assert.deepEqual(result.orphanedNars, ['nar/own.nar.zst']);
    assert.deepEqual([...result.deleted].sort(), [HASH_A, HASH_C].sort(), 'not the unknown one');
    assert.equal(await index.getNar('nar/own.nar.zst'), undefined);
    assert.ok(await index.getNar('nar/shared.nar.zst'));
    assert.deepEqual(await index.missing([HASH_A, HASH_B, HASH_C]), [HASH_A, HASH_C]);
    assert.deepEqual(await index.referencesOf(HASH_C), [], 'references go with their path');
    assert.deepEqual(await index.deletePaths([HASH_B]), {
      deleted: [HASH_B],
      orphanedNars: ['nar/shared.nar.zst'],
    });
  });

  test('deletePaths keeps a path that a path outside the set references, and what it references', async () => {
    await index.putNar(nar('n1'));
    await index.addPath(path(HASH_A, 'nar/n1.nar.zst'));
    await index.addPath(path(HASH_B, 'nar/n1.nar.zst', [HASH_A]));
    // gc planned to evict A and B, but C (uploaded meanwhile) references B.
    await index.addPath(path(HASH_C, 'nar/n1.nar.zst', [HASH_B]));
    assert.deepEqual(await index.deletePaths([HASH_B, HASH_A]), { deleted: [], orphanedNars: [] });
    assert.deepEqual(await index.missing([HASH_A, HASH_B, HASH_C]), []);
  });

  test('addPath refuses, inside its transaction, a path whose required references are gone', async () => {
    await index.putNar(nar('n1'));
    await index.addPath(path(HASH_A, 'nar/n1.nar.zst'));
    await assert.rejects(
      async () => index.addPath(path(HASH_C, 'nar/n1.nar.zst', [HASH_A, HASH_B]), [HASH_A, HASH_B]),
      (error: unknown) => FirnError.is(error) && error.code === 'FIRN_E_UPLOAD_REFERENCE_MISSING',
    );
    assert.deepEqual(await index.missing([HASH_C]), [HASH_C], 'nothing was committed');
    assert.equal(await index.addPath(path(HASH_B, 'nar/n1.nar.zst', [HASH_A]), [HASH_A]), true);
  });

  test('of concurrent writes, a refused one takes only itself back', async () => {
    const [n1, n2, a, refused, b] = await Promise.allSettled([
      index.putNar(nar('n1')),
      index.putNar(nar('n2')),
      index.addPath(path(HASH_A, 'nar/n1.nar.zst')),
      index.addPath(path(HASH_C, 'nar/n2.nar.zst', [HASH_B]), [HASH_B]),
      index.addPath(path(HASH_B, 'nar/n2.nar.zst', [HASH_A]), [HASH_A]),
    ]);
    assert.deepEqual(
      [n1, n2, a, b].map((result) => result.status === 'fulfilled' && result.value),
      [true, true, true, true],
    );
    assert.equal(refused.status, 'rejected');
    assert.ok(
      FirnError.is(refused.reason) && refused.reason.code === 'FIRN_E_UPLOAD_REFERENCE_MISSING',
    );
    assert.deepEqual(await index.missing([HASH_A, HASH_B, HASH_C]), [HASH_C]);
    assert.deepEqual(await index.referencesOf(HASH_B), [HASH_A]);
    assert.equal((await index.getNar('nar/n2.nar.zst'))?.fileSize, 100);
  });

  test('listUnusedNars lists NARs without paths created before the cut-off', async () => {
    await index.putNar(nar('old', 1, 1000));
    await index.putNar(nar('new', 1, 3000));
    await index.putNar(nar('used', 1, 1000));
    await index.addPath(path(HASH_A, 'nar/used.nar.zst'));
    assert.deepEqual(await index.listUnusedNars(2000), ['nar/old.nar.zst']);
    assert.deepEqual((await index.listUnusedNars(4000)).sort(), [
      'nar/new.nar.zst',
      'nar/old.nar.zst',
    ]);
  });

  test('deleteNar drops the NAR and every path using it', async () => {
    await index.putNar(nar('n1'));
    await index.addPath(path(HASH_A, 'nar/n1.nar.zst'));
    await index.deleteNar('nar/n1.nar.zst');
    assert.equal(await index.getNarInfo(HASH_A), undefined);
    assert.deepEqual(await index.listNars(), []);
  });
});

describe('tokens', () => {
  const token = (id: string, name: string, secretHash: string) => ({
    id,
    name,
    scope: 'push' as const,
    secretHash,
    createdAt: 1,
  });

  test('a token is found by its secret hash and records its use', async () => {
    await index.createToken(token('id1', 'builder1', 'h1'));
    const found = await index.findToken('h1');
    assert.equal(found?.name, 'builder1');
    assert.equal(found.scope, 'push');
    assert.equal(await index.findToken('h2'), undefined);
    const [listed] = await index.listTokens();
    assert.ok(listed?.lastUsedAt !== undefined && listed.lastUsedAt > 1);
  });

  test('names are unique: a second token of the same name is FIRN_E_FILE_EXISTS', async () => {
    await index.createToken(token('id1', 'builder1', 'h1'));
    await assert.rejects(
      async () => index.createToken(token('id2', 'builder1', 'h2')),
      (error: unknown) => FirnError.is(error) && error.code === 'FIRN_E_FILE_EXISTS',
    );
    assert.equal((await index.listTokens()).length, 1);
  });

  test('revoke by id or by name; unknown is false; a revoked token is not found', async () => {
    await index.createToken(token('id1', 'builder1', 'h1'));
    await index.createToken(token('id2', 'builder2', 'h2'));
    assert.equal(await index.revokeToken('id1'), true);
    assert.equal(await index.revokeToken('builder2'), true);
    assert.equal(await index.revokeToken('builder2'), false);
    assert.equal(await index.findToken('h1'), undefined);
    assert.equal(await index.findToken('h2'), undefined);
    assert.deepEqual(await index.listTokens(), []);
  });

  test('listTokens never exposes secret hashes', async () => {
    await index.createToken(token('id1', 'builder1', 'secret-hash-value'));
    assert.doesNotMatch(JSON.stringify(await index.listTokens()), /secret-hash-value/);
  });
});

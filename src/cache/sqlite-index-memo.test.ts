/**
 * The in-memory narinfo memo of SqliteIndex: a path deleted by another connection (firn cache gc
 * beside firn serve) is no longer served once the event-loop turn that saw it ends, and our own
 * deletes take effect at once.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterEach, beforeEach, test } from 'node:test';
import type { NarRecord, PathRecord } from './cache-index.ts';
import { SqliteIndex } from './sqlite-index.ts';

const HASH_A = 'a'.repeat(32);
const HASH_B = 'b'.repeat(32);

let dir: string;
let server: SqliteIndex;
let gc: SqliteIndex;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'firn-index-memo-'));
  server = new SqliteIndex(join(dir, 'index.sqlite'));
  gc = new SqliteIndex(join(dir, 'index.sqlite'));
});

afterEach(async () => {
  await server.close();
  await gc.close();
  rmSync(dir, { recursive: true, force: true });
});

function nar(name: string): NarRecord {
  return {
    key: `nar/${name}.nar.zst`,
    compression: 'zstd',
    fileHash: `sha256:${name}`,
    fileSize: 100,
    narHash: `sha256:nar-${name}`,
    narSize: 200,
    createdAt: 1000,
  };
}

function path(hashPart: string, narKey: string, narinfo: string): PathRecord {
  return {
    hashPart,
    storePath: `/nix/store/${hashPart}-p`,
    narKey,
    narHash: 'sha256:x',
    narSize: 200,
    fileSize: 100,
    references: [],
    deriver: undefined,
    narinfo,
    uploadedAt: 5000,
    uploadedBy: 'builder',
  };
}

test('a path another connection deletes is not served after that turn', async () => {
  await gc.putNar(nar('n1'));
  await gc.addPath(path(HASH_A, 'nar/n1.nar.zst', 'first\n'));
  assert.equal(await server.getNarInfo(HASH_A), 'first\n');
  await nextTurn();
  await gc.deletePaths([HASH_A]);
  await nextTurn();
  assert.equal(await server.getNarInfo(HASH_A), undefined);
  // Uploaded again (same hash part, new text): the new text is served, not the old memo.
  await gc.putNar(nar('n1'));
  await gc.addPath(path(HASH_A, 'nar/n1.nar.zst', 'second\n'));
  await nextTurn();
  assert.equal(await server.getNarInfo(HASH_A), 'second\n');
});

test('a NAR another connection deletes takes its paths with it', async () => {
  await gc.putNar(nar('n1'));
  await gc.addPath(path(HASH_A, 'nar/n1.nar.zst', 'a\n'));
  await gc.addPath(path(HASH_B, 'nar/n1.nar.zst', 'b\n'));
  assert.equal(await server.getNarInfo(HASH_A), 'a\n');
  assert.equal(await server.getNarInfo(HASH_B), 'b\n');
  await nextTurn();
  await gc.deleteNar('nar/n1.nar.zst');
  await nextTurn();
  assert.equal(await server.getNarInfo(HASH_A), undefined);
  assert.equal(await server.getNarInfo(HASH_B), undefined);
});

test("the index's own deletes take effect at once, in the same turn", async () => {
  await server.putNar(nar('n1'));
  await server.addPath(path(HASH_A, 'nar/n1.nar.zst', 'a\n'));
  await server.putNar(nar('n2'));
  await server.addPath(path(HASH_B, 'nar/n2.nar.zst', 'b\n'));
  assert.equal(await server.getNarInfo(HASH_A), 'a\n');
  assert.equal(await server.getNarInfo(HASH_B), 'b\n');
  await server.deletePaths([HASH_A]);
  assert.equal(await server.getNarInfo(HASH_A), undefined);
  await server.deleteNar('nar/n2.nar.zst');
  assert.equal(await server.getNarInfo(HASH_B), undefined);
});

test('a miss is not remembered: a path added later is found', async () => {
  assert.equal(await server.getNarInfo(HASH_A), undefined);
  await nextTurn();
  await gc.putNar(nar('n1'));
  await gc.addPath(path(HASH_A, 'nar/n1.nar.zst', 'a\n'));
  assert.equal(await server.getNarInfo(HASH_A), 'a\n');
});

test('a token another connection revokes is refused after that turn; our own revoke at once', async () => {
  for (const [id, name] of [
    ['t1', 'one'],
    ['t2', 'two'],
  ] as const) {
    await gc.createToken({ id, name, scope: 'push', secretHash: `hash-${id}`, createdAt: 1 });
  }
  assert.equal((await server.findToken('hash-t1'))?.name, 'one');
  assert.equal((await server.findToken('hash-t2'))?.name, 'two');
  assert.equal(await gc.revokeToken('one'), true);
  await nextTurn();
  assert.equal(await server.findToken('hash-t1'), undefined);
  assert.equal(await server.revokeToken('two'), true);
  assert.equal(await server.findToken('hash-t2'), undefined, 'same turn');
});

test('a NAR record is read back from memory until another connection deletes it', async () => {
  assert.equal(await server.putNar(nar('n1')), true);
  assert.equal(await server.putNar({ ...nar('n1'), fileSize: 999 }), false, 'first record kept');
  assert.equal((await server.getNar('nar/n1.nar.zst'))?.fileSize, 100);
  await gc.deleteNar('nar/n1.nar.zst');
  await nextTurn();
  assert.equal(await server.getNar('nar/n1.nar.zst'), undefined);
});

import assert from 'node:assert/strict';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import fc from 'fast-check';
import { FirnError } from '../errors.ts';
import {
  dir,
  encodeNar,
  file,
  link,
  treeArbitrary,
  treeFromFs,
  type NarTree,
} from '../../test/nar/nar-model.ts';
import { encodeStrings } from './nar-format.ts';
import { unpackNar } from './nar-unpack.ts';

function tempDir(t: TestContext): string {
  const path = mkdtempSync(join(tmpdir(), 'firn-nar-unpack-'));
  t.after(() => {
    rmSync(path, { recursive: true, force: true });
  });
  return path;
}

const TREE = dir({
  bin: dir({ hi: file('#!/bin/sh\n', true), link: link('../share/x') }),
  dangling: link('/does/not/exist'),
  empty: dir({}),
  share: dir({ x: file('x\n'), e: file('') }),
  [Buffer.from([0xff]).toString('latin1')]: file('latin1 name'),
});

function mode(path: string): number {
  return lstatSync(path).mode & 0o777;
}

test('a directory tree is restored with 0755/0644 modes', async (t) => {
  const dest = join(tempDir(t), 'out');
  const result = await unpackNar([encodeNar(TREE)], dest);
  assert.deepEqual(treeFromFs(dest), TREE);
  assert.deepEqual(
    { files: result.files, directories: result.directories, symlinks: result.symlinks },
    { files: 4, directories: 4, symlinks: 2 },
  );
  assert.equal(result.narSize, encodeNar(TREE).length);
  assert.equal(mode(dest), 0o755);
  assert.equal(mode(join(dest, 'empty')), 0o755);
  assert.equal(mode(join(dest, 'bin/hi')), 0o755);
  assert.equal(mode(join(dest, 'share/x')), 0o644);
});

test('a root file or symlink becomes DEST itself', async (t) => {
  const root = tempDir(t);
  await unpackNar([encodeNar(file('abc', true))], join(root, 'f'));
  assert.deepEqual(treeFromFs(join(root, 'f')), file('abc', true));
  assert.equal(mode(join(root, 'f')), 0o755);
  await unpackNar([encodeNar(link('nowhere'))], join(root, 'l'));
  assert.deepEqual(treeFromFs(join(root, 'l')), link('nowhere'));
});

test('big contents arrive in many chunks', async (t) => {
  const contents = Buffer.alloc(3_000_000, 9);
  const bytes = encodeNar(dir({ big: file(contents) }));
  const pieces = Array.from({ length: Math.ceil(bytes.length / 65536) }, (_, i) =>
    bytes.subarray(i * 65536, (i + 1) * 65536),
  );
  const dest = join(tempDir(t), 'out');
  await unpackNar(pieces, dest);
  assert.deepEqual(treeFromFs(dest), dir({ big: file(contents) }));
});

test('DEST must not exist and its parent must', async (t) => {
  const root = tempDir(t);
  mkdirSync(join(root, 'there'));
  writeFileSync(join(root, 'there/keep'), 'keep');
  await assert.rejects(unpackNar([encodeNar(TREE)], join(root, 'there')), {
    code: 'FIRN_E_FILE_EXISTS',
  });
  assert.deepEqual(readdirSync(join(root, 'there')), ['keep'], 'an existing DEST is left alone');
  await assert.rejects(unpackNar([encodeNar(TREE)], join(root, 'missing/out')), {
    code: 'FIRN_E_FILE_NOT_FOUND',
  });
  await assert.rejects(unpackNar([encodeNar(TREE)], join(root, 'there/keep/out')), {
    code: 'FIRN_E_FILE_NOT_FOUND',
  });
});

function hostile(...tokens: (string | Buffer)[]): Buffer {
  return encodeStrings('nix-archive-1', ...tokens);
}
const EMPTY_FILE = ['(', 'type', 'regular', 'contents', '', ')'] as const;
function entry(name: string, ...node: readonly string[]): string[] {
  return ['entry', '(', 'name', name, 'node', ...node, ')'];
}

test('hostile NARs fail with their code and leave nothing behind', async (t) => {
  const root = tempDir(t);
  const cases: [string, Buffer][] = [
    ['FIRN_E_NAR_BAD_NAME', hostile('(', 'type', 'directory', ...entry('..', ...EMPTY_FILE), ')')],
    ['FIRN_E_NAR_BAD_NAME', hostile('(', 'type', 'directory', ...entry('a/b', ...EMPTY_FILE), ')')],
    ['FIRN_E_NAR_BAD_NAME', hostile('(', 'type', 'directory', ...entry('.', ...EMPTY_FILE), ')')],
    // A symlink named "a" pointing out, then "a" again as a directory holding a file.
    [
      'FIRN_E_NAR_UNSORTED',
      hostile(
        '(',
        'type',
        'directory',
        ...entry('a', '(', 'type', 'symlink', 'target', root, ')'),
        ...entry('a', '(', 'type', 'directory', ...entry('escaped', ...EMPTY_FILE), ')'),
        ')',
      ),
    ],
    ['FIRN_E_NAR_TRUNCATED', encodeNar(TREE).subarray(0, 700)],
    ['FIRN_E_NAR_TRAILING_DATA', Buffer.concat([encodeNar(TREE), Buffer.alloc(8)])],
    ['FIRN_E_NAR_BAD_MAGIC', Buffer.from('not a nar at all')],
  ];
  for (const [index, [code, bytes]] of cases.entries()) {
    const dest = join(root, `out${index}`);
    await assert.rejects(unpackNar([bytes], dest), (error: unknown) => {
      assert.ok(error instanceof FirnError);
      assert.equal(error.code, code, error.message);
      return true;
    });
    assert.equal(existsSync(dest), false, `case ${index}: DEST removed`);
  }
  assert.deepEqual(readdirSync(root), [], 'nothing was written beside DEST');
});

test('a failure of the source removes DEST too', async (t) => {
  const dest = join(tempDir(t), 'out');
  const bytes = encodeNar(TREE);
  async function* failing(): AsyncGenerator<Buffer> {
    yield bytes.subarray(0, 600);
    await Promise.resolve();
    throw new Error('connection reset');
  }
  await assert.rejects(unpackNar(failing(), dest), /connection reset/);
  assert.equal(existsSync(dest), false);
});

test('property: random trees round-trip through unpack', async (t) => {
  const root = tempDir(t);
  let n = 0;
  await fc.assert(
    fc.asyncProperty(treeArbitrary, async (tree: NarTree) => {
      const dest = join(root, String(n++));
      await unpackNar([encodeNar(tree)], dest);
      assert.deepEqual(treeFromFs(dest), tree);
    }),
    { numRuns: 60 },
  );
});

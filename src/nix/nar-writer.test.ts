import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { Writable } from 'node:stream';
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
  materialize,
  treeArbitrary,
} from '../../test/nar/nar-model.ts';
import { NAR_CHUNK_SIZE, hashPathNar, narChunks, narStream, writeNar } from './nar-writer.ts';

function tempDir(t: TestContext): string {
  const path = mkdtempSync(join(tmpdir(), 'firn-nar-writer-'));
  t.after(() => {
    rmSync(path, { recursive: true, force: true });
  });
  return path;
}

function dump(path: string): Buffer {
  return Buffer.concat([...narChunks(path)]);
}

test('a single file is the regular-file form of the grammar', (t) => {
  const path = join(tempDir(t), 'f');
  writeFileSync(path, 'hello\n');
  const expected = Buffer.concat([
    Buffer.from('0d00000000000000', 'hex'),
    Buffer.from('nix-archive-1\0\0\0'),
    Buffer.from('0100000000000000', 'hex'),
    Buffer.from('(\0\0\0\0\0\0\0'),
    Buffer.from('0400000000000000', 'hex'),
    Buffer.from('type\0\0\0\0'),
    Buffer.from('0700000000000000', 'hex'),
    Buffer.from('regular\0'),
    Buffer.from('0800000000000000', 'hex'),
    Buffer.from('contents'),
    Buffer.from('0600000000000000', 'hex'),
    Buffer.from('hello\n\0\0'),
    Buffer.from('0100000000000000', 'hex'),
    Buffer.from(')\0\0\0\0\0\0\0'),
  ]);
  assert.deepEqual(dump(path), expected);
  assert.deepEqual(dump(path), encodeNar(file('hello\n')));
});

test('only the owner-execute bit makes a file executable', (t) => {
  const root = tempDir(t);
  for (const [name, mode, executable] of [
    ['u', 0o744, true],
    ['g', 0o654, false],
    ['o', 0o645, false],
    ['none', 0o600, false],
  ] as const) {
    const path = join(root, name);
    writeFileSync(path, name);
    chmodSync(path, mode);
    assert.deepEqual(dump(path), encodeNar(file(name, executable)), name);
  }
});

test('a symlink root, dangling or not, is written as a symlink', (t) => {
  const root = tempDir(t);
  materialize(link('/does/not/exist'), join(root, 'dangling'));
  assert.deepEqual(dump(join(root, 'dangling')), encodeNar(link('/does/not/exist')));
  materialize(file('x'), join(root, 'x'));
  materialize(link('x'), join(root, 'l'));
  assert.deepEqual(dump(join(root, 'l')), encodeNar(link('x')));
});

test('directory entries are ordered by bytes, not by JS string order', (t) => {
  // U+FFFD is EF BF BD in UTF-8 and sorts before F0 9F 98 80 (U+1F600), although its UTF-16
  // code unit FFFD sorts after the surrogate D83D. Upper case sorts before lower case.
  const tree = dir({
    '😀': file('1'),
    '\uFFFD': file('2'),
    b: file('3'),
    B: file('4'),
    a: dir({}),
  });
  const path = join(tempDir(t), 't');
  materialize(tree, path);
  assert.deepEqual(dump(path), encodeNar(tree));
  // JS orders the other way round, so a writer sorting strings would fail here.
  assert.deepEqual(['\uFFFD', '😀'].sort(), ['😀', '\uFFFD']);
});

test('names that are not UTF-8 survive byte for byte', (t) => {
  const tree = dir([
    [Buffer.from([0xff, 0xfe]), file('a')],
    [Buffer.from([0xc3]), dir([[Buffer.from([0x80, 0x41]), link(Buffer.from([0xff]))]])],
  ]);
  const path = join(tempDir(t), 't');
  materialize(tree, path);
  assert.deepEqual(dump(path), encodeNar(tree));
});

test('nested and empty directories, empty files', (t) => {
  const tree = dir({
    empty: dir({}),
    a: dir({ b: dir({ c: dir({ d: file('') }) }), e: file('', true) }),
    z: file('zz'),
  });
  const path = join(tempDir(t), 't');
  materialize(tree, path);
  assert.deepEqual(dump(path), encodeNar(tree));
});

test('a file larger than a chunk is streamed in chunks of NAR_CHUNK_SIZE at most', (t) => {
  const contents = Buffer.alloc(3 * 1024 * 1024 + 5);
  for (let i = 0; i < contents.length; i += 4096) contents[i] = i % 251;
  const path = join(tempDir(t), 'big');
  materialize(file(contents, true), path);
  const chunks = [...narChunks(path)];
  assert.ok(chunks.length >= contents.length / NAR_CHUNK_SIZE);
  for (const chunk of chunks) assert.ok(chunk.length <= NAR_CHUNK_SIZE);
  assert.deepEqual(Buffer.concat(chunks), encodeNar(file(contents, true)));
});

test('reused buffers give the same bytes when each chunk is used at once', (t) => {
  const tree = dir({ big: file(Buffer.alloc(2_500_000, 7)), small: file('s'), l: link('big') });
  const path = join(tempDir(t), 't');
  materialize(tree, path);
  const hash = createHash('sha256');
  for (const chunk of narChunks(path, { reuseBuffer: true })) hash.update(chunk);
  assert.deepEqual(hash.digest(), createHash('sha256').update(encodeNar(tree)).digest());
});

test('narStream yields the same bytes as narChunks', async (t) => {
  const tree = dir({ a: file(Buffer.alloc(1_500_000, 1)), b: dir({ c: file('c', true) }) });
  const path = join(tempDir(t), 't');
  materialize(tree, path);
  const parts: Buffer[] = [];
  for await (const chunk of narStream(path)) parts.push(chunk as Buffer);
  assert.deepEqual(Buffer.concat(parts), encodeNar(tree));
});

test('writeNar writes through a Writable with backpressure and recycles its buffers', async (t) => {
  const tree = dir({ a: file(Buffer.alloc(3 * NAR_CHUNK_SIZE + 17, 3)), b: file('b', true) });
  const path = join(tempDir(t), 't');
  materialize(tree, path);
  const parts: Buffer[] = [];
  const seen = new Set<ArrayBufferLike>();
  const slow = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _encoding, callback) {
      parts.push(Buffer.from(chunk)); // copy: the buffer is reused once the callback ran
      seen.add(chunk.buffer);
      setTimeout(callback, 1);
    },
  });
  const size = await writeNar(path, slow);
  assert.deepEqual(Buffer.concat(parts), encodeNar(tree));
  assert.equal(size, encodeNar(tree).length);
  assert.ok(seen.size <= 2, `${seen.size} buffers for ${parts.length} chunks`);
});

test('hashPathNar gives the hash and size of the NAR', async (t) => {
  const tree = dir({ a: file('hello'), b: link('a') });
  const path = join(tempDir(t), 't');
  materialize(tree, path);
  const nar = encodeNar(tree);
  for (const algorithm of ['sha256', 'sha512', 'sha1', 'md5'] as const) {
    const result = await hashPathNar(path, algorithm);
    assert.equal(result.size, nar.length);
    assert.deepEqual(result.hash, {
      algorithm,
      digest: createHash(algorithm).update(nar).digest(),
    });
  }
});

test('a socket in the tree is FIRN_E_NAR_UNSUPPORTED_FILE naming the path', async (t) => {
  const root = tempDir(t);
  const socket = join(root, 'sock');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  t.after(() => server.close());
  assert.throws(
    () => dump(root),
    (error: unknown) =>
      error instanceof FirnError &&
      error.code === 'FIRN_E_NAR_UNSUPPORTED_FILE' &&
      error.message.includes(socket),
  );
  const stream = narStream(root);
  await assert.rejects(
    async () => {
      for await (const _ of stream) {
        // drain
      }
    },
    { code: 'FIRN_E_NAR_UNSUPPORTED_FILE' },
  );
});

test('a missing path is FIRN_E_FILE_NOT_FOUND', async () => {
  assert.throws(() => dump('/nonexistent/firn/path'), { code: 'FIRN_E_FILE_NOT_FOUND' });
  await assert.rejects(hashPathNar('/nonexistent/firn/path'), { code: 'FIRN_E_FILE_NOT_FOUND' });
});

test('property: the writer agrees with the reference encoder on random trees', (t) => {
  const root = tempDir(t);
  let n = 0;
  fc.assert(
    fc.property(treeArbitrary, (tree) => {
      const path = join(root, String(n++));
      materialize(tree, path);
      assert.deepEqual(dump(path), encodeNar(tree));
    }),
    { numRuns: 60 },
  );
});

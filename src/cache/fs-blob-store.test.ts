import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { FirnError } from '../errors.ts';
import { FsBlobStore } from './fs-blob-store.ts';

let root: string;
let store: FsBlobStore;

beforeEach(async () => {
  root = mkdtempSync(join(tmpdir(), 'firn-blobs-'));
  store = new FsBlobStore(root);
  await store.init();
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

async function readAll(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function tempFiles(): string[] {
  return readdirSync(join(root, 'tmp'));
}

async function* slowChunks(count: number, failAt?: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < count; i++) {
    if (i === failAt) throw new Error('source broke');
    await new Promise((resolve) => setImmediate(resolve));
    yield Buffer.alloc(1000, i);
  }
}

describe('put', () => {
  test('stores the bytes and reports size; get and head read them back', async () => {
    const result = await store.put('nar/abc.nar', [Buffer.from('hello '), Buffer.from('world')]);
    assert.deepEqual(result, { size: 11, created: true });
    assert.deepEqual(await store.head('nar/abc.nar'), { size: 11 });
    const blob = await store.get('nar/abc.nar');
    assert.equal(blob?.size, 11);
    assert.equal((await readAll(blob.body)).toString(), 'hello world');
    assert.deepEqual(tempFiles(), []);
  });

  test('keeps an existing blob unless overwrite is asked for', async () => {
    await store.put('log/x', [Buffer.from('first')]);
    assert.deepEqual(await store.put('log/x', [Buffer.from('second!')]), {
      size: 5,
      created: false,
    });
    assert.equal(readFileSync(join(root, 'log/x'), 'utf8'), 'first');
    assert.deepEqual(await store.put('log/x', [Buffer.from('second!')], { overwrite: true }), {
      size: 7,
      created: true,
    });
    assert.equal(readFileSync(join(root, 'log/x'), 'utf8'), 'second!');
    assert.deepEqual(tempFiles(), []);
  });

  test('beforeCommit sees the size; when it throws, no blob and no temp file remain', async () => {
    let seen = -1;
    await assert.rejects(
      store.put('nar/bad.nar', slowChunks(5), {
        beforeCommit: (info) => {
          seen = info.size;
          return Promise.reject(new Error('hash mismatch'));
        },
      }),
      /hash mismatch/,
    );
    assert.equal(seen, 5000);
    assert.equal(await store.head('nar/bad.nar'), undefined);
    assert.deepEqual(tempFiles(), []);
  });

  test('a source that fails midway leaves nothing', async () => {
    await assert.rejects(store.put('nar/broken.nar', slowChunks(10, 4)), /source broke/);
    assert.equal(await store.head('nar/broken.nar'), undefined);
    assert.deepEqual(tempFiles(), []);
  });

  test('an aborted upload leaves nothing, and beforeCommit never runs', async () => {
    const abort = new AbortController();
    let committed = false;
    async function* source(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(100);
      abort.abort();
      await new Promise((resolve) => setTimeout(resolve, 10));
      yield Buffer.alloc(100);
    }
    await assert.rejects(
      store.put('nar/aborted.nar', source(), {
        signal: abort.signal,
        beforeCommit: () => {
          committed = true;
          return Promise.resolve();
        },
      }),
    );
    assert.equal(committed, false);
    assert.equal(await store.head('nar/aborted.nar'), undefined);
    assert.deepEqual(tempFiles(), []);
  });

  test('a failed re-upload of a key keeps the blob already there', async () => {
    await store.put('log/x', [Buffer.from('kept')]);
    await assert.rejects(
      store.put('log/x', [Buffer.from('new')], {
        overwrite: true,
        beforeCommit: () => Promise.reject(new Error('no')),
      }),
    );
    assert.equal(readFileSync(join(root, 'log/x'), 'utf8'), 'kept');
  });
});

describe('get', () => {
  test('serves inclusive byte ranges and reports the whole size', async () => {
    const bytes = Buffer.from('0123456789');
    await store.put('nar/r.nar', [bytes]);
    for (const [start, end] of [
      [0, 0],
      [2, 5],
      [9, 9],
      [0, 9],
    ] as const) {
      const blob = await store.get('nar/r.nar', { range: { start, end } });
      assert.equal(blob?.size, 10);
      assert.deepEqual(await readAll(blob.body), bytes.subarray(start, end + 1));
    }
  });

  test('a missing key is undefined for get and head; delete is idempotent', async () => {
    assert.equal(await store.get('nar/none.nar'), undefined);
    assert.equal(await store.head('nar/none.nar'), undefined);
    await store.delete('nar/none.nar');
    await store.put('nar/d.nar', [Buffer.from('x')]);
    await store.delete('nar/d.nar');
    assert.equal(await store.head('nar/d.nar'), undefined);
  });

  test('an abort signal stops a read', async () => {
    await store.put('nar/big.nar', [Buffer.alloc(8 << 20)]);
    const abort = new AbortController();
    const blob = await store.get('nar/big.nar', { signal: abort.signal });
    assert.ok(blob);
    abort.abort();
    await assert.rejects(readAll(blob.body), { name: 'AbortError' });
  });
});

describe('list and cleanup', () => {
  test('list yields the files under a prefix with sizes, and nothing for an absent prefix', async () => {
    await store.put('nar/a.nar', [Buffer.alloc(3)]);
    await store.put('nar/b.nar.zst', [Buffer.alloc(4)]);
    await store.put('ls/c.ls', [Buffer.alloc(5)]);
    const listed: { key: string; size: number }[] = [];
    for await (const blob of store.list('nar/')) listed.push(blob);
    assert.deepEqual(
      listed.sort((x, y) => x.key.localeCompare(y.key)),
      [
        { key: 'nar/a.nar', size: 3 },
        { key: 'nar/b.nar.zst', size: 4 },
      ],
    );
    const none: unknown[] = [];
    for await (const blob of store.list('realisations/')) none.push(blob);
    assert.deepEqual(none, []);
  });

  test('cleanup removes what a crashed process left in tmp/ and counts it', async () => {
    writeFileSync(join(root, 'tmp', '123-0-1.tmp'), 'half');
    writeFileSync(join(root, 'tmp', '123-0-2.tmp'), 'half');
    await store.put('nar/a.nar', [Buffer.alloc(3)]);
    assert.equal(await store.cleanup(), 2);
    assert.deepEqual(tempFiles(), []);
    assert.deepEqual(await store.head('nar/a.nar'), { size: 3 });
  });
});

describe('keys', () => {
  const bad = [
    'nar/../x',
    'nar/..',
    '../index.sqlite',
    'nar/./x',
    '/etc/passwd',
    'nar//x',
    'nar/x/',
    'nar',
    'nar/a b',
    'nar/a\0b',
    'Nar/x',
    'nar\\..\\x',
  ];
  for (const key of bad) {
    test(`refuses ${JSON.stringify(key)} for every operation`, async () => {
      const refused = (error: unknown): boolean =>
        FirnError.is(error) && error.code === 'FIRN_E_BAD_REQUEST';
      await assert.rejects(store.put(key, [Buffer.from('x')]), refused);
      await assert.rejects(store.get(key), refused);
      await assert.rejects(store.head(key), refused);
      await assert.rejects(store.delete(key), refused);
      assert.deepEqual(tempFiles(), []);
    });
  }

  test('accepts the keys firn builds', async () => {
    for (const key of [
      'nar/0mw7rl6zxfpmq0p7hymz1lhbpxqcw0b5y2hqn9bl03vffh0ry0ql.nar.zst',
      'ls/0mw7rl6zxfpmq0p7hymz1lhbpxqcw0b5y2hqn9bl03vffh0ry0ql.ls',
      'log/0mw7rl6zxfpmq0p7hymz1lhbpxqcw0b-hello-2.12.drv',
      'realisations/sha256=abc!out.doi',
      'build-trace-v2/x.drv!out.doi',
    ]) {
      assert.equal((await store.put(key, [Buffer.from('x')])).created, true, key);
    }
  });
});

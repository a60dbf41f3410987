import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import fc from 'fast-check';
import { FsBlobStore } from './fs-blob-store.ts';
import { collectGarbage } from './gc.ts';
import { SqliteIndex } from './sqlite-index.ts';

const DAY = 86_400_000;
const NOW = 100 * DAY;

let dir: string;
let index: SqliteIndex;
let blobs: FsBlobStore;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'firn-gc-'));
  index = new SqliteIndex(join(dir, 'index.sqlite'));
  blobs = new FsBlobStore(join(dir, 'blobs'));
  await blobs.init();
});

afterEach(async () => {
  await index.close();
  rmSync(dir, { recursive: true, force: true });
});

function hashOf(name: string): string {
  return name.padEnd(32, '0');
}

/** Stores a NAR blob of `size` bytes and its row, created at `createdAt`. */
async function addNar(key: string, size: number, createdAt = 0): Promise<void> {
  await blobs.put(key, [Buffer.alloc(size)]);
  await index.putNar({
    key,
    compression: 'none',
    fileHash: `sha256:${key}`,
    fileSize: size,
    narHash: `sha256:${key}`,
    narSize: size,
    createdAt,
  });
}

/** Adds path `name` last read at `lastAccess`, with a NAR of its own unless `narKey` is given. */
async function addPath(
  name: string,
  options: { size?: number; lastAccess: number; refs?: string[]; narKey?: string },
): Promise<void> {
  const hashPart = hashOf(name);
  const narKey = options.narKey ?? `nar/${name}.nar`;
  if (options.narKey === undefined) await addNar(narKey, options.size ?? 100);
  await blobs.put(`ls/${hashPart}.ls`, [Buffer.from('{}')]);
  const added = await index.addPath({
    hashPart,
    storePath: `/nix/store/${hashPart}-${name}`,
    narKey,
    narHash: 'sha256:x',
    narSize: 1,
    fileSize: options.size ?? 100,
    references: (options.refs ?? []).map(hashOf),
    deriver: undefined,
    narinfo: `StorePath: /nix/store/${hashPart}-${name}\n`,
    uploadedAt: options.lastAccess,
    uploadedBy: undefined,
  });
  assert.equal(added, true);
}

async function held(): Promise<string[]> {
  return (await index.listPaths()).map((path) => path.storePath.slice(44)).sort();
}

async function blobKeys(): Promise<string[]> {
  const keys: string[] = [];
  for await (const blob of blobs.list('nar/')) keys.push(blob.key);
  for await (const blob of blobs.list('ls/')) keys.push(blob.key);
  return keys.sort();
}

describe('gc by size', () => {
  test('evicts least recently used paths until the NARs fit, and deletes their blobs', async () => {
    await addPath('a', { size: 100, lastAccess: 1 * DAY });
    await addPath('b', { size: 100, lastAccess: 3 * DAY });
    await addPath('c', { size: 100, lastAccess: 2 * DAY });
    await addPath('d', { size: 100, lastAccess: 4 * DAY });
    const report = await collectGarbage(index, blobs, { maxSize: 250, now: NOW });
    assert.deepEqual(report.evictedPaths.map((p) => p.slice(44)).sort(), ['a', 'c']);
    assert.equal(report.removedNars, 2);
    assert.equal(report.freedBytes, 200);
    assert.equal(report.remainingBytes, 200);
    assert.deepEqual(await held(), ['b', 'd']);
    assert.deepEqual(await blobKeys(), [
      `ls/${hashOf('b')}.ls`,
      `ls/${hashOf('d')}.ls`,
      'nar/b.nar',
      'nar/d.nar',
    ]);
  });

  test('a read (touch) makes a path recent again', async () => {
    await addPath('a', { lastAccess: 1 * DAY });
    await addPath('b', { lastAccess: 2 * DAY });
    index.touch(hashOf('a'), 5 * DAY);
    await collectGarbage(index, blobs, { maxSize: 100, now: NOW });
    assert.deepEqual(await held(), ['a']);
  });

  test('nothing happens when the cache already fits', async () => {
    await addPath('a', { lastAccess: 1 * DAY });
    const report = await collectGarbage(index, blobs, { maxSize: 1000, now: NOW });
    assert.deepEqual(report.evictedPaths, []);
    assert.deepEqual(await held(), ['a']);
  });

  test('a NAR shared by two paths is freed (and counted) only when both are gone', async () => {
    await addNar('nar/shared.nar', 100);
    await addPath('a', { lastAccess: 1 * DAY, narKey: 'nar/shared.nar' });
    await addPath('b', { lastAccess: 2 * DAY, narKey: 'nar/shared.nar' });
    await addPath('c', { size: 100, lastAccess: 3 * DAY });
    const report = await collectGarbage(index, blobs, { maxSize: 100, now: NOW });
    assert.deepEqual(await held(), ['c']);
    assert.equal(report.removedNars, 1);
    assert.equal(report.freedBytes, 100);
    assert.ok(!(await blobKeys()).includes('nar/shared.nar'));
  });
});

describe('closures stay complete', () => {
  test('never evicts a path that a kept path references, even the oldest', async () => {
    await addPath('dep', { size: 100, lastAccess: 1 * DAY });
    await addPath('app', { size: 100, lastAccess: 5 * DAY, refs: ['dep', 'app'] });
    await addPath('other', { size: 100, lastAccess: 3 * DAY });
    const report = await collectGarbage(index, blobs, { maxSize: 200, now: NOW });
    assert.deepEqual(await held(), ['app', 'dep']);
    assert.deepEqual(
      report.evictedPaths.map((p) => p.slice(44)),
      ['other'],
    );
    assert.equal(report.keptForReferrers, 0);
  });

  test('older-than keeps old dependencies of recent paths and reports them', async () => {
    await addPath('dep', { lastAccess: 1 * DAY });
    await addPath('app', { lastAccess: NOW - DAY, refs: ['dep'] });
    const report = await collectGarbage(index, blobs, { olderThan: 30 * DAY, now: NOW });
    assert.deepEqual(report.evictedPaths, []);
    assert.equal(report.keptForReferrers, 1);
    assert.deepEqual(await held(), ['app', 'dep']);
  });

  test('evicting a referrer frees its references in cascade (a -> b -> c, all old)', async () => {
    await addPath('c', { lastAccess: 1 * DAY });
    await addPath('b', { lastAccess: 2 * DAY, refs: ['c'] });
    await addPath('a', { lastAccess: 3 * DAY, refs: ['b'] });
    await addPath('new', { lastAccess: NOW });
    const report = await collectGarbage(index, blobs, { olderThan: 30 * DAY, now: NOW });
    assert.deepEqual(
      report.evictedPaths.map((p) => p.slice(44)),
      ['a', 'b', 'c'],
      'referrers go before what they reference',
    );
    assert.deepEqual(await held(), ['new']);
  });

  test('a path referenced from outside the evicted set keeps its whole closure', async () => {
    await addPath('c', { lastAccess: 1 * DAY });
    await addPath('b', { lastAccess: 2 * DAY, refs: ['c'] });
    await addPath('a', { lastAccess: 3 * DAY, refs: ['b'] });
    await addPath('keeper', { lastAccess: NOW, refs: ['b'] });
    await collectGarbage(index, blobs, { olderThan: 30 * DAY, now: NOW });
    assert.deepEqual(await held(), ['b', 'c', 'keeper']);
  });
});

describe('a path uploaded while gc runs', () => {
  test('keeps what it references, and the report says what was really removed', async () => {
    await addPath('c', { lastAccess: 1 * DAY, size: 300 });
    await addPath('b', { lastAccess: 2 * DAY, refs: ['c'], size: 200 });
    await addPath('a', { lastAccess: 3 * DAY, size: 100 });
    // gc plans to evict a, b and c; before its commit, a new path referencing b is uploaded.
    const racing = new Proxy(index, {
      get(target, property) {
        if (property === 'deletePaths') {
          return async (hashParts: readonly string[]) => {
            await addPath('fresh', { lastAccess: NOW, refs: ['b'], size: 50 });
            return target.deletePaths(hashParts);
          };
        }
        // Methods run on the index itself: its private fields are not the proxy's.
        const value: unknown = Reflect.get(target, property);
        return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
      },
    });
    const report = await collectGarbage(racing, blobs, { olderThan: 30 * DAY, now: NOW });
    assert.deepEqual(await held(), ['b', 'c', 'fresh']);
    assert.deepEqual(
      report.evictedPaths.map((p) => p.slice(44)),
      ['a'],
      'only what was deleted',
    );
    assert.equal(report.removedNars, 1);
    assert.equal(report.freedBytes, 100);
    assert.equal(report.keptForReferrers, 2);
    assert.equal(report.remainingBytes, 500, 'b and c still count (fresh came after the plan)');
    // Kept paths keep their listings; the evicted one's is gone.
    assert.deepEqual(
      await blobKeys(),
      [
        'ls/' + hashOf('b') + '.ls',
        'ls/' + hashOf('c') + '.ls',
        'ls/' + hashOf('fresh') + '.ls',
        'nar/b.nar',
        'nar/c.nar',
        'nar/fresh.nar',
      ].sort(),
    );
  });
});

describe('LRU order', () => {
  test('an old dependency freed by evicting its referrer goes before newer paths', async () => {
    await addPath('dep', { lastAccess: 1 * DAY });
    await addPath('a', { lastAccess: 2 * DAY, refs: ['dep'] });
    await addPath('b', { lastAccess: 3 * DAY });
    await addPath('c', { lastAccess: NOW });
    await collectGarbage(index, blobs, { maxSize: 150, now: NOW });
    assert.deepEqual(await held(), ['c'], 'the most recently read path is the one kept');
  });

  test('matches a naive oracle on random closures: evict the oldest unreferenced path until it fits', async () => {
    const closure = fc.integer({ min: 1, max: 10 }).chain((n) =>
      fc.record({
        sizes: fc.array(fc.integer({ min: 1, max: 50 }), { minLength: n, maxLength: n }),
        access: fc.uniqueArray(fc.integer({ min: 1, max: 1000 }), { minLength: n, maxLength: n }),
        // Path i may reference any path j < i: a DAG, like store paths.
        refs: fc.array(fc.array(fc.nat(), { maxLength: 3 }), { minLength: n, maxLength: n }),
        maxSize: fc.integer({ min: 0, max: 300 }),
      }),
    );
    let round = 0;
    await fc.assert(
      fc.asyncProperty(closure, async ({ sizes, access, refs, maxSize }) => {
        round++;
        const names = sizes.map((_, i) => `r${round}p${i}`);
        const refNames = refs.map((list, i) =>
          i === 0 ? [] : [...new Set(list.map((j) => names[j % i] ?? ''))],
        );
        for (const [i, name] of names.entries()) {
          await addPath(name, {
            size: sizes[i] ?? 1,
            lastAccess: access[i] ?? 0,
            refs: refNames[i] ?? [],
          });
        }
        // The oracle, on plain arrays.
        const kept = new Set(names);
        let total = sizes.reduce((sum, size) => sum + size, 0);
        while (total > maxSize) {
          const free = names.filter(
            (name) =>
              kept.has(name) &&
              ![...kept].some((other) => refNames[names.indexOf(other)]?.includes(name)),
          );
          free.sort((x, y) => (access[names.indexOf(x)] ?? 0) - (access[names.indexOf(y)] ?? 0));
          const oldest = free[0];
          if (oldest === undefined) break;
          kept.delete(oldest);
          total -= sizes[names.indexOf(oldest)] ?? 0;
        }
        const report = await collectGarbage(index, blobs, { maxSize, now: NOW });
        assert.deepEqual(await held(), [...kept].sort());
        assert.equal(report.remainingBytes, total);
        for (const name of kept) {
          for (const ref of refNames[names.indexOf(name)] ?? []) assert.ok(kept.has(ref));
        }
        // Start the next case from an empty cache.
        await collectGarbage(index, blobs, { maxSize: 0, now: NOW, orphanGraceMs: 0 });
      }),
      { numRuns: 40 },
    );
  });
});

describe('abandoned NARs and dry runs', () => {
  test('a NAR without narinfo is removed only after the grace period', async () => {
    await addNar('nar/old-orphan.nar', 10, NOW - 2 * 3_600_000);
    await addNar('nar/fresh-orphan.nar', 10, NOW - 60_000);
    await addPath('a', { lastAccess: NOW });
    const report = await collectGarbage(index, blobs, { olderThan: 30 * DAY, now: NOW });
    assert.equal(report.removedNars, 1);
    assert.equal(report.freedBytes, 10);
    assert.equal(report.remainingBytes, 110);
    assert.deepEqual(await blobKeys(), [
      `ls/${hashOf('a')}.ls`,
      'nar/a.nar',
      'nar/fresh-orphan.nar',
    ]);
    assert.equal(await index.getNar('nar/old-orphan.nar'), undefined);
    assert.ok(await index.getNar('nar/fresh-orphan.nar'));
  });

  test('a dry run reports what a real run does and changes nothing', async () => {
    await addPath('dep', { lastAccess: 1 * DAY });
    await addPath('a', { lastAccess: 2 * DAY, refs: ['dep'] });
    await addPath('b', { lastAccess: 3 * DAY });
    await addPath('c', { lastAccess: NOW });
    const before = await blobKeys();
    const dry = await collectGarbage(index, blobs, { maxSize: 150, dryRun: true, now: NOW });
    assert.deepEqual(await blobKeys(), before);
    assert.deepEqual(await held(), ['a', 'b', 'c', 'dep']);
    const real = await collectGarbage(index, blobs, { maxSize: 150, now: NOW });
    assert.deepEqual(dry, real);
    assert.deepEqual(await held(), ['c']);
  });
});

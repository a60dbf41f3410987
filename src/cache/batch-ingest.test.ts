import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import fc from 'fast-check';
import {
  applyMutation,
  byteMutation,
  type ByteMutation,
} from '../../test/helpers/byte-mutations.ts';
import { makeFixture, withField, type Fixture } from '../../test/cache/upload-fixtures.ts';
import { FirnError } from '../errors.ts';
import { MAX_NARINFO_BYTES } from '../nix/narinfo.ts';
import { generateSecretKey } from '../nix/signing.ts';
import {
  encodeBatchEntry,
  ingestBatch,
  parseBatch,
  type BatchEntry,
  type BatchIngestDeps,
  type EntryOutcome,
} from './batch-ingest.ts';
import type { BlobStore } from './blob-store.ts';
import { FsBlobStore } from './fs-blob-store.ts';
import { SqliteIndex } from './sqlite-index.ts';

function encode(entries: readonly { narinfo: string | Uint8Array; file: Uint8Array }[]): Buffer {
  return Buffer.concat(entries.flatMap((entry) => encodeBatchEntry(entry.narinfo, entry.file)));
}

/** Asserts `fn` throws the framing error, naming `entry` and `offset` when given. */
function assertFraming(
  fn: () => unknown,
  expected: { entry?: number; offset?: number; message?: RegExp } = {},
): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(FirnError.is(error), `not a FirnError: ${String(error)}`);
    assert.equal(error.code, 'FIRN_E_BAD_REQUEST');
    const entry = error.details?.entry;
    const offset = error.details?.offset;
    assert.equal(typeof entry, 'number');
    assert.equal(typeof offset, 'number');
    assert.match(
      error.message,
      new RegExp(`^path batch entry ${String(entry)} at byte ${String(offset)}: `),
    );
    if (expected.entry !== undefined) assert.equal(entry, expected.entry);
    if (expected.offset !== undefined) assert.equal(offset, expected.offset);
    if (expected.message !== undefined) assert.match(error.message, expected.message);
    return true;
  });
}

const entryArbitrary = fc.record({
  narinfo: fc.uint8Array({ minLength: 1, maxLength: 200 }),
  file: fc.uint8Array({ maxLength: 300 }),
});
const batchArbitrary = fc.array(entryArbitrary, { minLength: 1, maxLength: 6 });

describe('parseBatch', () => {
  test('reads back what encodeBatchEntry wrote, with entry offsets', () => {
    const narinfo = 'StorePath: /nix/store/x\n';
    const body = encode([
      { narinfo, file: Buffer.from('abc') },
      { narinfo: 'é', file: Buffer.alloc(0) },
    ]);
    const entries = parseBatch(body);
    assert.deepEqual(
      entries.map((entry) => [entry.index, entry.offset, entry.narinfo, entry.file.toString()]),
      [
        [0, 0, narinfo, 'abc'],
        [1, 4 + narinfo.length + 4 + 3, 'é', ''],
      ],
    );
  });

  test('property: any batch of entries round-trips', () => {
    fc.assert(
      fc.property(batchArbitrary, (batch) => {
        const entries = parseBatch(encode(batch));
        assert.equal(entries.length, batch.length);
        for (const [i, entry] of entries.entries()) {
          assert.equal(entry.narinfo, Buffer.from(batch[i]?.narinfo ?? []).toString('utf8'));
          assert.ok(entry.file.equals(batch[i]?.file ?? Buffer.alloc(1)));
        }
      }),
      { numRuns: 200 },
    );
  });

  test('an empty body, a cut body and trailing bytes are refused naming entry and offset', () => {
    const one = encode([{ narinfo: 'abc', file: Buffer.from('12345') }]);
    assertFraming(() => parseBatch(Buffer.alloc(0)), {
      entry: 0,
      offset: 0,
      message: /no entries/,
    });
    assertFraming(() => parseBatch(one.subarray(0, 2)), {
      entry: 0,
      offset: 0,
      message: /ends inside the narinfo length \(2 of 4 bytes\)/,
    });
    assertFraming(() => parseBatch(one.subarray(0, 5)), {
      entry: 0,
      offset: 4,
      message: /narinfo of 3 bytes runs past the end of the body \(1 bytes left\)/,
    });
    assertFraming(() => parseBatch(one.subarray(0, 9)), {
      entry: 0,
      offset: 7,
      message: /ends inside the NAR file length/,
    });
    assertFraming(() => parseBatch(one.subarray(0, one.length - 1)), {
      entry: 0,
      offset: 11,
      message: /NAR file of 5 bytes runs past the end/,
    });
    for (const tail of [Buffer.from([0]), Buffer.from('garbage!')]) {
      assertFraming(() => parseBatch(Buffer.concat([one, tail])), { entry: 1, offset: one.length });
    }
  });

  test('a zero or oversized narinfo length is refused', () => {
    const good = encode([{ narinfo: 'abc', file: Buffer.from('x') }]);
    const zero = Buffer.concat([
      good,
      encode([{ narinfo: Buffer.alloc(0), file: Buffer.alloc(0) }]),
    ]);
    assertFraming(() => parseBatch(zero), {
      entry: 1,
      offset: good.length,
      message: /length is 0/,
    });
    const huge = Buffer.from(good);
    huge.writeUInt32BE(MAX_NARINFO_BYTES + 1, 0);
    assertFraming(() => parseBatch(huge), {
      entry: 0,
      offset: 0,
      message: new RegExp(`narinfo length ${MAX_NARINFO_BYTES + 1} exceeds the limit`),
    });
    const max = Buffer.from(good);
    max.writeUInt32BE(0xffffffff, 0);
    assertFraming(() => parseBatch(max), { entry: 0, message: /exceeds the limit/ });
    const small = encode([{ narinfo: '12345', file: Buffer.alloc(0) }]);
    assertFraming(() => parseBatch(small, { maxNarInfoBytes: 4 }), { message: /limit of 4 bytes/ });
    assert.equal(parseBatch(small, { maxNarInfoBytes: 5 }).length, 1);
  });

  test('a file length past the end is refused, however large', () => {
    const body = encode([{ narinfo: 'abc', file: Buffer.from('x') }]);
    body.writeUInt32BE(0xffffffff, 7);
    assertFraming(() => parseBatch(body), { entry: 0, offset: 11, message: /4294967295 bytes/ });
  });

  test('more entries than the limit are refused at the first one too many', () => {
    const entry = { narinfo: 'a', file: Buffer.from('b') };
    const body = encode([entry, entry, entry, entry]);
    assert.equal(parseBatch(body, { maxEntries: 4 }).length, 4);
    assertFraming(() => parseBatch(body, { maxEntries: 3 }), {
      entry: 3,
      offset: 3 * 10,
      message: /more than 3 entries/,
    });
  });

  test('property: every truncation is refused with FIRN_E_BAD_REQUEST', () => {
    fc.assert(
      fc.property(batchArbitrary, fc.nat(), (batch, cutAt) => {
        const body = encode(batch);
        const cut = cutAt % body.length;
        // A cut exactly between two entries is a shorter valid batch.
        const boundaries = new Set(parseBatch(body).map((entry) => entry.offset));
        if (boundaries.has(cut) && cut > 0) {
          assert.ok(parseBatch(body.subarray(0, cut)).length < batch.length);
          return;
        }
        assertFraming(() => parseBatch(body.subarray(0, cut)));
      }),
      { numRuns: 500 },
    );
  });

  // Truncations have a property of their own above.
  const mutationArbitrary = byteMutation({
    cut: false,
    lengths: fc.oneof(
      fc.bigInt({ min: 0n, max: 600n }),
      fc.constant(0xffffffffn),
      fc.bigInt({ min: 0n, max: 2n ** 31n - 1n }),
    ),
  });

  /** Overwrites a u32 BE at any offset (lengths are not aligned in a batch). */
  function mutate(bytes: Buffer, mutation: ByteMutation): Buffer {
    return applyMutation(bytes, mutation, (out, at, value) => {
      if (at + 4 <= out.length) out.writeUInt32BE(Number(value), at);
    });
  }

  test('property: mutated bodies parse to exactly their bytes or are refused with FIRN_E_BAD_REQUEST', () => {
    fc.assert(
      fc.property(
        batchArbitrary,
        fc.array(mutationArbitrary, { minLength: 1, maxLength: 4 }),
        (batch, mutations) => {
          const body = mutations.reduce(mutate, encode(batch));
          let entries: BatchEntry[];
          try {
            entries = parseBatch(body, { maxEntries: 8, maxNarInfoBytes: 256 });
          } catch (error) {
            assert.ok(FirnError.is(error), `not a FirnError: ${String(error)}`);
            assert.equal(error.code, 'FIRN_E_BAD_REQUEST');
            return;
          }
          // Accepted: the entries are the whole body, nothing more or less.
          const again = Buffer.concat(
            entries.flatMap((entry) =>
              encodeBatchEntry(
                body.subarray(entry.offset + 4, entry.offset + 4 + body.readUInt32BE(entry.offset)),
                entry.file,
              ),
            ),
          );
          assert.ok(again.equals(body));
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('ingestBatch', () => {
  let dir: string;
  let index: SqliteIndex;
  let blobs: FsBlobStore;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'firn-batch-'));
    index = new SqliteIndex(join(dir, 'index.sqlite'));
    blobs = new FsBlobStore(join(dir, 'blobs'));
    await blobs.init();
  });

  afterEach(async () => {
    await index.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function deps(store: BlobStore = blobs): BatchIngestDeps {
    return {
      blobs: store,
      index,
      signingKey: generateSecretKey('unit-cache-1'),
      storeDir: '/nix/store',
      requireReferences: true,
      maxNarSize: 1 << 30,
    };
  }

  /** The test's blob store with another put. */
  function withPut(put: BlobStore['put']): BlobStore {
    return {
      put,
      head: (key) => blobs.head(key),
      get: (key, options) => blobs.get(key, options),
      delete: (key) => blobs.delete(key),
      list: (prefix) => blobs.list(prefix),
      cleanup: () => blobs.cleanup(),
    };
  }

  function entriesOf(fixtures: readonly (Fixture | { narinfo: string; file: Buffer })[]) {
    return parseBatch(encode(fixtures));
  }

  function summary(outcomes: readonly EntryOutcome[]): string[] {
    return outcomes.map((outcome) =>
      outcome.status === 'refused' ? `refused ${outcome.error.code}` : outcome.status,
    );
  }

  /** lib ← mid0..mid{n-1} ← top, dependencies first. */
  function closure(mids: number): Fixture[] {
    const lib = makeFixture({ name: 'lib' });
    const middle = Array.from({ length: mids }, (_, i) =>
      makeFixture({ name: `mid${i}`, references: [lib.baseName], self: i % 2 === 0 }),
    );
    const top = makeFixture({ name: 'top', references: middle.map((mid) => mid.baseName) });
    return [lib, ...middle, top];
  }

  test('paths referencing earlier entries of the batch are committed; again they are present', async () => {
    const fixtures = closure(5);
    const outcomes = await ingestBatch(deps(), entriesOf(fixtures), { uploadedBy: 'ci' });
    assert.deepEqual(
      summary(outcomes),
      fixtures.map(() => 'created'),
    );
    assert.deepEqual(
      outcomes.map((outcome) => outcome.storePath),
      fixtures.map((fixture) => fixture.storePath),
    );
    for (const fixture of fixtures) {
      const stored = await index.getPath(fixture.hashPart);
      assert.equal(stored?.uploadedBy, 'ci');
      assert.match(stored.narinfo, /^Sig: unit-cache-1:/m);
    }
    const again = await ingestBatch(deps(), entriesOf(fixtures));
    assert.deepEqual(
      summary(again),
      fixtures.map(() => 'present'),
    );
    assert.ok(again.every((outcome) => outcome.status === 'present' && !outcome.narCreated));
  });

  test('a path before the paths it references is refused; the rest of the batch is stored', async () => {
    const [lib, mid, top] = closure(1);
    assert.ok(lib !== undefined && mid !== undefined && top !== undefined);
    const outcomes = await ingestBatch(deps(), entriesOf([top, lib, mid]));
    assert.deepEqual(summary(outcomes), [
      'refused FIRN_E_UPLOAD_REFERENCE_MISSING',
      'created',
      'created',
    ]);
    // Its NAR was stored, as the NAR PUT before a refused narinfo PUT would be.
    const refused = outcomes[0];
    assert.equal(
      refused?.status === 'refused' ? refused.nar?.key : undefined,
      `nar/${top.fileName}`,
    );
    assert.equal(await index.getPath(top.hashPart), undefined);
  });

  test('an unreadable narinfo or a URL outside nar/ refuses only that entry, before its NAR', async () => {
    const [good, bad, elsewhere] = [makeFixture(), makeFixture(), makeFixture()];
    const outcomes = await ingestBatch(
      deps(),
      entriesOf([
        good,
        { narinfo: bad.narinfo.replace(/^NarHash: .*\n/m, ''), file: bad.file },
        {
          narinfo: withField(elsewhere.narinfo, 'URL', `x/${elsewhere.fileName}`),
          file: elsewhere.file,
        },
      ]),
    );
    assert.deepEqual(summary(outcomes), [
      'created',
      'refused FIRN_E_NARINFO_INVALID',
      'refused FIRN_E_BAD_REQUEST',
    ]);
    assert.equal(outcomes[1]?.storePath, null);
    assert.equal(outcomes[2]?.storePath, elsewhere.storePath);
    assert.deepEqual(readdirSync(join(dir, 'blobs', 'nar')), [good.fileName]);
  });

  test('NARs are written up to 8 at once, narinfos committed in entry order all the same', async () => {
    const fixtures = closure(30);
    let running = 0;
    let most = 0;
    // Later entries finish their NAR first: the commits must still wait, in order.
    const delays = new Map(fixtures.map((fixture, i) => [`nar/${fixture.fileName}`, 40 - i]));
    const slow = withPut(async (key, source, options) => {
      running++;
      most = Math.max(most, running);
      await new Promise((resolve) => setTimeout(resolve, delays.get(key) ?? 0));
      try {
        return await blobs.put(key, source, options);
      } finally {
        running--;
      }
    });
    const outcomes = await ingestBatch(deps(slow), entriesOf(fixtures));
    // lib's NAR is the slowest of the first eight; every mid needs lib, top needs every mid.
    assert.deepEqual(
      summary(outcomes),
      fixtures.map(() => 'created'),
    );
    assert.equal(most, 8);
  });

  test('an unexpected failure of one entry is FIRN_E_INTERNAL for it alone', async () => {
    const fixtures = [makeFixture(), makeFixture(), makeFixture()];
    const broken = `nar/${fixtures[1]?.fileName ?? ''}`;
    const failing = withPut((key, source, options) =>
      key === broken ? Promise.reject(new Error('disk on fire')) : blobs.put(key, source, options),
    );
    const outcomes = await ingestBatch(deps(failing), entriesOf(fixtures));
    assert.deepEqual(summary(outcomes), ['created', 'refused FIRN_E_INTERNAL', 'created']);
    const failed = outcomes[1];
    assert.ok(failed?.status === 'refused');
    assert.equal((failed.error.cause as Error).message, 'disk on fire');
    assert.doesNotMatch(failed.error.message, /fire/);
  });
});

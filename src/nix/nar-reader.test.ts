import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  applyMutation,
  byteMutation,
  type ByteMutation,
} from '../../test/helpers/byte-mutations.ts';
import { FirnError, type ErrorCode } from '../errors.ts';
import {
  dir,
  encodeNar,
  file,
  link,
  treeArbitrary,
  treeFromEvents,
  type NarTree,
} from '../../test/nar/nar-model.ts';
import { encodeStrings } from './nar-format.ts';
import { NarParser, readNar, type NarEvent } from './nar-reader.ts';

/** Parses `nar` fed in pieces of `step` bytes (all at once by default). */
function parse(nar: Buffer, step = nar.length || 1): NarEvent[] {
  const parser = new NarParser();
  const events: NarEvent[] = [];
  for (let at = 0; at < nar.length; at += step) {
    // Copy contents out: they are views of the piece, which is a view of `nar` anyway.
    events.push(...parser.push(nar.subarray(at, at + step)));
  }
  parser.end();
  return events;
}

function parseError(nar: Buffer, step?: number): FirnError {
  try {
    parse(nar, step);
  } catch (error) {
    if (error instanceof FirnError) return error;
    throw error;
  }
  assert.fail('the NAR was accepted');
}

/** Asserts `nar` fails with `code` at `offset`, whether fed whole or byte by byte. */
function assertRejects(nar: Buffer, code: ErrorCode, offset?: number): FirnError {
  const whole = parseError(nar);
  assert.equal(whole.code, code, whole.message);
  const bytewise = parseError(nar, 1);
  assert.equal(bytewise.code, code, bytewise.message);
  assert.equal(bytewise.details?.offset, whole.details?.offset, 'same offset whatever the chunks');
  if (offset !== undefined) assert.equal(whole.details?.offset, offset, whole.message);
  assert.match(whole.message, /\(at byte \d+\)$/);
  return whole;
}

const SAMPLE = dir({
  B: file('hello\n'),
  bin: dir({ hi: file('#!/bin/sh\necho hi\n', true), link: link('../share/readme') }),
  dang: link('/nonexistent'),
  empty: file(''),
  share: dir({ empty: dir({}), readme: file('x\n') }),
  ü: dir({ Ä: file('ü\n') }),
});

/** `nix-archive-1` and the tokens, with `u64` for hand-made length headers. */
function nar(...tokens: (string | Buffer)[]): Buffer {
  return encodeStrings('nix-archive-1', ...tokens);
}
function u64(value: bigint): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(value);
  return out;
}
const FILE_OPEN = ['(', 'type', 'regular', 'contents'] as const;

test('round trip: every chunking gives the same tree and events', () => {
  const bytes = encodeNar(SAMPLE);
  const whole = parse(bytes);
  assert.deepEqual(treeFromEvents(whole), SAMPLE);
  for (const step of [1, 3, 7, 8, 13, 64, 1000]) {
    assert.deepEqual(treeFromEvents(parse(bytes, step)), SAMPLE, `step ${step}`);
  }
});

test('events carry paths, depths and the offsets Nix lists as narOffset', () => {
  const events = parse(encodeNar(SAMPLE)).filter((e) => e.type !== 'contents');
  const summary = events.map((e) =>
    e.type === 'regular'
      ? `${e.type} ${e.path.toString()} ${e.depth} ${e.size} ${e.executable} ${e.contentsOffset}`
      : `${e.type} ${e.path.toString()} ${e.depth}`,
  );
  // Offsets as in the `.ls` file Nix 2.8 wrote for the same tree.
  assert.deepEqual(summary, [
    'directory  0',
    'regular B 1 6 false 232',
    'directory bin 1',
    'regular bin/hi 2 18 true 592',
    'symlink bin/link 2',
    'directory-end bin 1',
    'symlink dang 1',
    'regular empty 1 0 false 1232',
    'directory share 1',
    'directory share/empty 2',
    'directory-end share/empty 2',
    'regular share/readme 2 2 false 1720',
    'directory-end share 1',
    'directory ü 1',
    'regular ü/Ä 2 3 false 2080',
    'directory-end ü 1',
    'directory-end  0',
  ]);
  const root = events[0];
  assert.equal(root?.type === 'directory' ? root.offset : -1, 24);
});

test('a root file or symlink', () => {
  assert.deepEqual(treeFromEvents(parse(encodeNar(file('x', true)))), file('x', true));
  assert.deepEqual(treeFromEvents(parse(encodeNar(link('/nowhere')))), link('/nowhere'));
});

test('truncation at every offset is FIRN_E_NAR_TRUNCATED at the end of input', () => {
  const bytes = encodeNar(SAMPLE);
  for (let length = 0; length < bytes.length; length++) {
    const error = parseError(bytes.subarray(0, length));
    assert.equal(error.code, 'FIRN_E_NAR_TRUNCATED', `length ${length}: ${error.message}`);
    assert.equal(error.details?.offset, length);
  }
});

test('wrong magic is FIRN_E_NAR_BAD_MAGIC, even before the header is whole', () => {
  assertRejects(encodeStrings('nix-archive-2'), 'FIRN_E_NAR_BAD_MAGIC', 20);
  assertRejects(Buffer.from('\xfd7zXZ\0\0\x04', 'latin1'), 'FIRN_E_NAR_BAD_MAGIC', 0);
  assertRejects(Buffer.from('(\0\0'), 'FIRN_E_NAR_BAD_MAGIC', 0);
  assertRejects(Buffer.concat([u64(2n ** 60n), Buffer.alloc(16)]), 'FIRN_E_NAR_BAD_MAGIC', 0);
  assertRejects(encodeStrings('nix-archive-1x'), 'FIRN_E_NAR_BAD_MAGIC', 0);
});

test('non-zero padding is FIRN_E_NAR_BAD_PADDING at the offending byte', () => {
  const good = nar(...FILE_OPEN, 'abc', ')');
  // Padding of the "(" tag, of "contents" data, and of the root ")".
  for (const offset of [24 + 9, 24 + 15, good.length - 16 - 1, good.length - 1]) {
    const bad = Buffer.from(good);
    bad[offset] = 1;
    assertRejects(bad, 'FIRN_E_NAR_BAD_PADDING', offset);
  }
  const name = Buffer.from(encodeNar(dir({ abc: file('') })));
  const at = name.indexOf('abc') + 3;
  name[at] = 0x80;
  assertRejects(name, 'FIRN_E_NAR_BAD_PADDING', at);
});

test('unknown tags and tags out of order are FIRN_E_NAR_UNEXPECTED_TOKEN', () => {
  const cases: Buffer[] = [
    nar('('),
    nar('(', 'tipe', 'regular', 'contents', '', ')'),
    nar('(', 'type', 'fifo', ')'),
    nar('(', 'type', 'regular', 'executable', 'yes', 'contents', '', ')'),
    nar('(', 'type', 'regular', 'contents', '', 'executable', '', ')'),
    nar('(', 'type', 'regular', 'executable', '', 'executable', '', 'contents', '', ')'),
    nar('(', 'type', 'regular', ')'),
    nar('(', 'type', 'symlink', 'contents', 'x', ')'),
    nar('(', 'type', 'directory', 'entry', '(', 'name', 'a', '(', 'type'),
    nar('(', 'type', 'directory', 'entry', 'name', 'a'),
    nar('(', 'type', 'directory', 'name', 'a'),
    nar(
      '(',
      'type',
      'directory',
      'entry',
      '(',
      'name',
      'a',
      'node',
      ...FILE_OPEN,
      '',
      ')',
      'entry',
    ),
    nar('(', 'type', 'symlink', 'target', 'x', 'target', 'y', ')'),
    nar(')', 'type'),
  ];
  for (const [i, bytes] of cases.entries()) {
    if (i === 0) {
      assertRejects(bytes, 'FIRN_E_NAR_TRUNCATED');
      continue;
    }
    const error = assertRejects(bytes, 'FIRN_E_NAR_UNEXPECTED_TOKEN');
    assert.match(error.message, /expected/, `case ${i}`);
  }
});

test('an absurd tag length fails at once, without waiting for the bytes', () => {
  const bytes = Buffer.concat([nar('(', 'type'), u64(2n ** 60n)]);
  const parser = new NarParser();
  assert.throws(() => parser.push(bytes), { code: 'FIRN_E_NAR_UNEXPECTED_TOKEN' });
  assert.throws(() => parser.push(Buffer.alloc(8)), { code: 'FIRN_E_NAR_UNEXPECTED_TOKEN' });
  assert.throws(
    () => {
      parser.end();
    },
    { code: 'FIRN_E_NAR_UNEXPECTED_TOKEN' },
  );
});

test('lengths beyond the limits are FIRN_E_NAR_LIMIT', () => {
  const head = nar('(', 'type', 'directory', 'entry', '(', 'name');
  for (const length of [256n, 2n ** 32n, 2n ** 60n, 2n ** 64n - 1n]) {
    assertRejects(Buffer.concat([head, u64(length)]), 'FIRN_E_NAR_LIMIT', head.length);
  }
  const target = nar('(', 'type', 'symlink', 'target');
  assertRejects(Buffer.concat([target, u64(4097n)]), 'FIRN_E_NAR_LIMIT', target.length);
  const contents = nar(...FILE_OPEN);
  for (const length of [2n ** 53n, 2n ** 60n, 2n ** 64n - 1n]) {
    const error = assertRejects(Buffer.concat([contents, u64(length)]), 'FIRN_E_NAR_LIMIT');
    assert.equal(error.details?.offset, contents.length);
  }
  // At the limits themselves a NAR is fine.
  const longName = 'n'.repeat(255);
  assert.deepEqual(
    treeFromEvents(parse(encodeNar(dir({ [longName]: file('') })))),
    dir({ [longName]: file('') }),
  );
  const longTarget = Buffer.alloc(4096, 0x61);
  assert.deepEqual(treeFromEvents(parse(encodeNar(link(longTarget)), 5)), link(longTarget));
});

test('huge contents stream through without being buffered', () => {
  const parser = new NarParser();
  const size = 2 ** 40;
  const events = parser.push(Buffer.concat([nar(...FILE_OPEN), u64(BigInt(size))]));
  assert.equal(events[0]?.type === 'regular' ? events[0].size : 0, size);
  const piece = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < 64; i++) {
    const [event] = parser.push(piece);
    assert.equal(event?.type === 'contents' && event.data.buffer === piece.buffer, true, 'a view');
  }
  assert.throws(
    () => {
      parser.end();
    },
    { code: 'FIRN_E_NAR_TRUNCATED' },
  );
});

test('forbidden names are FIRN_E_NAR_BAD_NAME', () => {
  for (const name of ['', '.', '..', 'a/b', '/', 'a\0b', '\0']) {
    const bytes = nar(
      '(',
      'type',
      'directory',
      'entry',
      '(',
      'name',
      name,
      'node',
      ...FILE_OPEN,
      '',
      ')',
      ')',
      ')',
    );
    const error = assertRejects(
      bytes,
      'FIRN_E_NAR_BAD_NAME',
      nar('(', 'type', 'directory', 'entry', '(', 'name').length,
    );
    assert.match(error.message, /names must not be/);
  }
  // '...' and '.a' are ordinary names.
  const ok = dir({ '...': file(''), '.a': file('') });
  assert.deepEqual(treeFromEvents(parse(encodeNar(ok))), ok);
});

test('symlink targets must be non-empty and free of NUL', () => {
  assertRejects(nar('(', 'type', 'symlink', 'target', '', ')'), 'FIRN_E_NAR_BAD_NAME');
  assertRejects(nar('(', 'type', 'symlink', 'target', 'a\0', ')'), 'FIRN_E_NAR_BAD_NAME');
});

function entries(...names: string[]): Buffer {
  return nar(
    '(',
    'type',
    'directory',
    ...names.flatMap((name) => ['entry', '(', 'name', name, 'node', ...FILE_OPEN, '', ')', ')']),
    ')',
  );
}

test('unsorted or duplicate names are FIRN_E_NAR_UNSORTED', () => {
  assert.match(assertRejects(entries('b', 'a'), 'FIRN_E_NAR_UNSORTED').message, /sorted/);
  assert.match(assertRejects(entries('a', 'a'), 'FIRN_E_NAR_UNSORTED').message, /twice/);
  assertRejects(entries('a', 'B'), 'FIRN_E_NAR_UNSORTED'); // 'B' (0x42) < 'a' (0x61)
  assertRejects(entries('\uFFFD', '😀', 'a'), 'FIRN_E_NAR_UNSORTED'); // 'a' after non-ASCII
  assertRejects(entries('😀', '\uFFFD'), 'FIRN_E_NAR_UNSORTED'); // bytes F0… > EF…
  parse(entries('B', 'a', 'b', '\uFFFD', '😀'));
  // Sorting is per directory: the same name in two directories is fine.
  parse(encodeNar(dir({ a: dir({ x: file('') }), b: dir({ x: file('') }) })));
});

test('bytes after the root object are FIRN_E_NAR_TRAILING_DATA', () => {
  const good = encodeNar(SAMPLE);
  assertRejects(Buffer.concat([good, Buffer.alloc(1)]), 'FIRN_E_NAR_TRAILING_DATA', good.length);
  assertRejects(Buffer.concat([good, encodeNar(SAMPLE)]), 'FIRN_E_NAR_TRAILING_DATA', good.length);
  const parser = new NarParser();
  parser.push(good);
  assert.equal(parser.done, true);
  assert.deepEqual(parser.push(Buffer.alloc(0)), []);
  assert.throws(() => parser.push(Buffer.from('x')), { code: 'FIRN_E_NAR_TRAILING_DATA' });
});

function nested(depth: number): NarTree {
  let tree: NarTree = file('bottom');
  for (let i = 0; i < depth; i++) tree = dir({ d: tree });
  return tree;
}

test('nesting deeper than 256 directories is FIRN_E_NAR_LIMIT', () => {
  assert.deepEqual(treeFromEvents(parse(encodeNar(nested(256)))), nested(256));
  assert.match(assertRejects(encodeNar(nested(257)), 'FIRN_E_NAR_LIMIT').message, /nested/);
  // A million levels fail quickly, without deep recursion.
  const open = encodeStrings('entry', '(', 'name', 'd', 'node', '(', 'type', 'directory');
  const deep = Buffer.concat([
    nar('(', 'type', 'directory'),
    ...Array.from({ length: 100_000 }, () => open),
  ]);
  assert.equal(parseError(deep).code, 'FIRN_E_NAR_LIMIT');
});

test('readNar reads async and sync sources of Buffers and Uint8Arrays', async () => {
  const bytes = encodeNar(SAMPLE);
  async function* pieces(): AsyncGenerator<Uint8Array> {
    await Promise.resolve();
    for (let at = 0; at < bytes.length; at += 100)
      yield new Uint8Array(bytes.subarray(at, at + 100));
  }
  const collected: NarEvent[] = [];
  for await (const event of readNar(pieces())) {
    collected.push(
      event.type === 'contents' ? { type: 'contents', data: Buffer.from(event.data) } : event,
    );
  }
  assert.deepEqual(treeFromEvents(collected), SAMPLE);
  const events: NarEvent[] = [];
  for await (const event of readNar([bytes])) events.push(event);
  assert.deepEqual(treeFromEvents(events), SAMPLE);
  await assert.rejects(
    async () => {
      for await (const _ of readNar([bytes.subarray(0, 50)])) {
        // drain
      }
    },
    { code: 'FIRN_E_NAR_TRUNCATED' },
  );
});

test('property: random trees survive encode → read in random chunks', () => {
  fc.assert(
    fc.property(treeArbitrary, fc.integer({ min: 1, max: 300 }), (tree, step) => {
      assert.deepEqual(treeFromEvents(parse(encodeNar(tree), step)), tree);
    }),
    { numRuns: 300 },
  );
});

const mutationArbitrary = byteMutation({
  cut: true,
  lengths: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
});

/** Overwrites an aligned u64 (most are length headers) with an arbitrary value. */
function mutate(bytes: Buffer, mutation: ByteMutation): Buffer {
  return applyMutation(bytes, mutation, (out, at, value) => {
    const aligned = at - (at % 8);
    if (aligned + 8 <= out.length) out.writeBigUInt64LE(value, aligned);
  });
}

test('property: mutated NARs are accepted or rejected with a FirnError, never anything else', () => {
  fc.assert(
    fc.property(
      treeArbitrary,
      fc.array(mutationArbitrary, { minLength: 1, maxLength: 4 }),
      fc.integer({ min: 1, max: 64 }),
      (tree, mutations, step) => {
        const bytes = mutations.reduce(mutate, encodeNar(tree));
        try {
          parse(bytes, step);
        } catch (error) {
          if (!(error instanceof FirnError) || !error.code.startsWith('FIRN_E_NAR_')) throw error;
        }
      },
    ),
    { numRuns: 2000 },
  );
});

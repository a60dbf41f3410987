/**
 * firn's NAR code against the real Nix 2.8: `firn nar pack` is byte-identical to
 * `nix-store --dump`, `firn hash path` to `nix hash path` in every encoding, `firn nar unpack`
 * restores what Nix dumped, `firn nar ls --json` equals the `.ls` file `nix copy` writes, and
 * hostile NARs are refused without a trace on disk.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { encodeStrings } from '../../src/nix/nar-format.ts';
import { runChecked } from '../../src/process/run.ts';
import { firn } from '../helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';
import { dir, directoryArbitrary, encodeNar, file, link, materialize } from './nar-model.ts';

const MiB = 1024 * 1024;

const MIXED = dir({
  Bin: dir({ run: file('#!/bin/sh\necho hi\n', true), Run: file('', true) }),
  bin: dir({ link: link('../share/ü/Ä'), dangling: link('/nonexistent/target') }),
  Ünïcödé: dir({ 日本語: file('にほんご\n'), '😀': file('smile'), '\uFFFD': file('replacement') }),
  empty: dir({}),
  'empty-file': file(''),
  nested: dir({ a: dir({ b: dir({ c: dir({ d: dir({ e: file('deep') }) }) }) }) }),
  share: dir({ ü: dir({ Ä: file('umlaut\n') }), 'self-link': link('.') }),
  big: file(randomBytes(5 * MiB + 123), true),
  [Buffer.from([0xff, 0x41]).toString('latin1')]: file('not utf-8 name'),
});

const ROOT_FILE = file('a single executable file\n', true);
const ROOT_SYMLINK = link('../somewhere/else');

let nix: NixEnv;
let trees: string;
/** Paths of every tree under test, in a fixed order. */
let paths: string[];
let seed: number;

function treePath(name: string): string {
  return join(trees, name);
}

before(() => {
  nix = makeNixEnv();
  trees = join(nix.dir, 'trees');
  mkdirSync(trees);
  materialize(MIXED, treePath('mixed'));
  materialize(ROOT_FILE, treePath('root-file'));
  materialize(ROOT_SYMLINK, treePath('root-symlink'));
  seed = Date.now() % 1_000_000;
  const random = fc.sample(directoryArbitrary, { numRuns: 8, seed });
  random.forEach((tree, i) => {
    materialize(tree, treePath(`random-${i}`));
  });
  paths = readdirSync(trees)
    .sort()
    .map((name) => treePath(name));
});

after(() => {
  nix[Symbol.dispose]();
});

async function nixDump(path: string): Promise<Buffer> {
  return (await nix.nix('nix-store', ['--dump', path])).stdout;
}

function assertSameBytes(actual: Buffer, expected: Buffer, what: string): void {
  if (actual.equals(expected)) return;
  let at = 0;
  while (at < actual.length && actual[at] === expected[at]) at++;
  assert.fail(
    `${what}: ${actual.length} vs ${expected.length} bytes, first difference at byte ${at} (seed ${seed})`,
  );
}

describe('firn nar pack', () => {
  test('is byte-identical to nix-store --dump for every tree', async () => {
    for (const path of paths) {
      const ours = await firn(['nar', 'pack', path]);
      assert.equal(ours.code, 0, ours.stderr);
      assertSameBytes(ours.stdout, await nixDump(path), basename(path));
    }
  });

  test('agrees with the reference encoder (so the trees are what the model says)', async () => {
    assertSameBytes(await nixDump(treePath('mixed')), encodeNar(MIXED), 'mixed');
    assertSameBytes(
      await nixDump(treePath('root-symlink')),
      encodeNar(ROOT_SYMLINK),
      'root-symlink',
    );
  });

  test('a FIFO is FIRN_E_NAR_UNSUPPORTED_FILE naming it, as Nix refuses it too', async () => {
    const root = join(nix.dir, 'with-fifo');
    materialize(dir({ a: file('a') }), root);
    await runChecked('mkfifo', [join(root, 'pipe')]);
    const ours = await firn(['nar', 'pack', root]);
    assert.equal(ours.code, 65);
    assert.match(ours.stderr, /with-fifo\/pipe.*\[FIRN_E_NAR_UNSUPPORTED_FILE\]/);
    assert.notEqual((await nix.nixRaw('nix-store', ['--dump', root])).code, 0);
  });
});

describe('firn hash path', () => {
  const variants: string[][] = [
    [],
    ['--base16'],
    ['--base32'],
    ['--base64'],
    ['--sri'],
    ['--type', 'sha512'],
    ['--type', 'sha512', '--base32'],
    ['--type', 'sha1', '--base16'],
    ['--type', 'md5', '--base64'],
    ['--type', 'md5'],
  ];
  for (const flags of variants) {
    test(`equals nix hash path ${flags.join(' ')}`, async () => {
      const expected = await nix.nix('nix', ['hash', 'path', ...flags, ...paths]);
      const ours = await firn(['hash', 'path', ...flags, ...paths]);
      assert.equal(ours.code, 0, ours.stderr);
      assert.equal(ours.stdout.toString(), expected.stdout.toString(), `seed ${seed}`);
      assert.equal(ours.stdout.toString().split('\n').length, paths.length + 1);
    });
  }

  test('hash convert agrees with nix hash to-base16/to-base32/to-base64/to-sri', async () => {
    const sri = (await nix.nix('nix', ['hash', 'path', treePath('mixed')])).stdout
      .toString()
      .trim();
    const base16 = (await nix.nix('nix', ['hash', 'to-base16', sri])).stdout.toString().trim();
    for (const [to, nixCommand] of [
      ['nix32', 'to-base32'],
      ['base16', 'to-base16'],
      ['base64', 'to-base64'],
      ['sri', 'to-sri'],
    ] as const) {
      const expected = (await nix.nix('nix', ['hash', nixCommand, '--type', 'sha256', base16]))
        .stdout;
      const ours = await firn(['hash', 'convert', '--to', to, '--type', 'sha256', base16]);
      assert.equal(ours.code, 0, ours.stderr);
      assert.equal(ours.stdout.toString(), expected.toString(), to);
      const fromSri = await firn(['hash', 'convert', '--to', to, sri]);
      assert.equal(fromSri.stdout.toString(), expected.toString(), `${to} from SRI`);
    }
  });
});

describe('firn nar unpack', () => {
  test("restores nix's dump into a tree whose dump is identical", async () => {
    const out = join(nix.dir, 'unpacked');
    mkdirSync(out);
    for (const path of paths) {
      const dump = await nixDump(path);
      const dest = join(out, basename(path));
      const result = await firn(['nar', 'unpack', dest], { input: dump });
      assert.equal(result.code, 0, result.stderr);
      assertSameBytes(await nixDump(dest), dump, basename(path));
    }
  });

  test('hostile NARs: non-zero exit, a FIRN_E_ code, no stack trace, nothing left behind', async () => {
    const root = join(nix.dir, 'hostile');
    const outside = join(root, 'outside');
    mkdirSync(outside, { recursive: true });
    writeFileSync(join(outside, 'canary'), 'untouched');
    const emptyFile = ['(', 'type', 'regular', 'contents', '', ')'];
    const entry = (name: string, ...node: string[]): string[] => [
      'entry',
      '(',
      'name',
      name,
      'node',
      ...node,
      ')',
    ];
    const nar = (...tokens: string[]): Buffer => encodeStrings('nix-archive-1', ...tokens);
    const cases: [string, Buffer][] = [
      [
        'FIRN_E_NAR_BAD_NAME',
        nar(
          '(',
          'type',
          'directory',
          ...entry('..', '(', 'type', 'directory', ...entry('outside', ...emptyFile), ')'),
          ')',
        ),
      ],
      [
        'FIRN_E_NAR_BAD_NAME',
        nar('(', 'type', 'directory', ...entry('../outside/pwned', ...emptyFile), ')'),
      ],
      [
        'FIRN_E_NAR_UNSORTED',
        nar(
          '(',
          'type',
          'directory',
          ...entry('a', '(', 'type', 'symlink', 'target', outside, ')'),
          ...entry('a', '(', 'type', 'directory', ...entry('pwned', ...emptyFile), ')'),
          ')',
        ),
      ],
      [
        'FIRN_E_NAR_UNSORTED',
        nar(
          '(',
          'type',
          'directory',
          ...entry('b', ...emptyFile),
          ...entry('a', ...emptyFile),
          ')',
        ),
      ],
      ['FIRN_E_NAR_TRUNCATED', encodeNar(MIXED).subarray(0, 3 * MiB)],
      ['FIRN_E_NAR_TRAILING_DATA', Buffer.concat([encodeNar(MIXED), Buffer.from('extra')])],
      ['FIRN_E_NAR_BAD_MAGIC', Buffer.from('\xfd7zXZ\0\0\x04\xe6\xd6\xb4\x46', 'latin1')],
      [
        'FIRN_E_NAR_LIMIT',
        Buffer.concat([
          nar('(', 'type', 'regular', 'contents'),
          Buffer.from('ffffffffffffff0f', 'hex'),
        ]),
      ],
      ['FIRN_E_NAR_UNEXPECTED_TOKEN', nar('(', 'type', 'socket', ')')],
    ];
    for (const [index, [code, bytes]] of cases.entries()) {
      const dest = join(root, `dest-${index}`);
      const result = await firn(['nar', 'unpack', dest], { input: bytes });
      const stderr = result.stderr;
      assert.notEqual(result.code, 0, `case ${index}`);
      assert.match(stderr, new RegExp(`\\[${code}\\]`), `case ${index}: ${stderr}`);
      assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
      assert.equal(existsSync(dest), false, `case ${index}: DEST removed`);
      assert.deepEqual(readdirSync(root).sort(), ['outside'], `case ${index}: nothing beside DEST`);
      assert.deepEqual(readdirSync(outside), ['canary']);
      assert.equal(readFileSync(join(outside, 'canary'), 'utf8'), 'untouched');
    }
  });
});

describe('firn nar ls', () => {
  /** Adds `path` to a chroot store and returns the `.ls` Nix writes for it in a file:// cache. */
  async function nixListing(path: string): Promise<Buffer> {
    const store = join(nix.dir, 'store');
    const cache = join(nix.dir, `cache-${basename(path)}`);
    const added = await nix.nix('nix', ['store', 'add-path', '--store', store, path]);
    const storePath = added.stdout.toString().trim();
    await nix.nix('nix', [
      'copy',
      '--no-check-sigs',
      '--store',
      store,
      '--to',
      `file://${cache}?write-nar-listing=1&compression=none`,
      storePath,
    ]);
    const hashPart = basename(storePath).slice(0, 32);
    return readFileSync(join(cache, `${hashPart}.ls`));
  }

  test('--json equals the .ls file nix copy writes with write-nar-listing=1', async () => {
    for (const name of ['mixed', 'root-file', 'root-symlink', 'random-0', 'random-1']) {
      const path = treePath(name);
      const narFile = join(nix.dir, `${name}.nar`);
      writeFileSync(narFile, await nixDump(path));
      const ours = await firn(['nar', 'ls', '--json', narFile]);
      assert.equal(ours.code, 0, ours.stderr);
      assertSameBytes(ours.stdout, await nixListing(path), name);
      const fromStdin = await firn(['nar', 'ls', '--json', '-'], { input: readFileSync(narFile) });
      assertSameBytes(fromStdin.stdout, ours.stdout, `${name} from stdin`);
    }
  });

  test('the text form lists one line per entry like nix store ls -lR', async () => {
    const narFile = join(nix.dir, 'text.nar');
    writeFileSync(narFile, await nixDump(treePath('mixed')));
    const ours = await firn(['nar', 'ls', narFile]);
    assert.equal(ours.code, 0, ours.stderr);
    const lines = ours.stdout.toString().split('\n');
    assert.equal(lines[0], 'dr-xr-xr-x                    0 .');
    assert.ok(lines.includes('-r-xr-xr-x                   18 ./Bin/run'));
    assert.ok(
      lines.includes('lrwxrwxrwx                    0 ./bin/dangling -> /nonexistent/target'),
    );
    assert.ok(lines.includes(`-r-xr-xr-x ${String(5 * MiB + 123).padStart(20)} ./big`));
  });

  test('a truncated NAR file is FIRN_E_NAR_TRUNCATED; a missing one FIRN_E_FILE_NOT_FOUND', async () => {
    const narFile = join(nix.dir, 'cut.nar');
    writeFileSync(narFile, (await nixDump(treePath('mixed'))).subarray(0, 1000));
    const cut = await firn(['nar', 'ls', narFile]);
    assert.equal(cut.code, 65);
    assert.match(cut.stderr, /\[FIRN_E_NAR_TRUNCATED\]/);
    const missing = await firn(['nar', 'ls', join(nix.dir, 'missing.nar')]);
    assert.equal(missing.code, 66);
    assert.match(missing.stderr, /\[FIRN_E_FILE_NOT_FOUND\]/);
  });
});

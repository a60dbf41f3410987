import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dir, encodeNar, file, link } from '../../test/nar/nar-model.ts';
import {
  NarListingBuilder,
  formatListingLine,
  jsonStringBytes,
  narListing,
} from './nar-listing.ts';
import { NarParser } from './nar-reader.ts';

async function listing(tree: Parameters<typeof encodeNar>[0]): Promise<string> {
  return (await narListing([encodeNar(tree)])).toString('latin1');
}

test('the listing of a tree is what Nix 2.8 wrote for it (captured from write-nar-listing=1)', async () => {
  const tree = dir({
    B: file('hello\n'),
    bin: dir({ hi: file('#!/bin/sh\necho hi\n', true), link: link('../share/readme') }),
    dang: link('/nonexistent'),
    empty: file(''),
    share: dir({ empty: dir({}), readme: file('x\n') }),
    ü: dir({ Ä: file('ü\n') }),
  });
  const nix =
    '{"version":1,"root":{"type":"directory","entries":{"B":{"type":"regular","size":6,"narOffset":232},' +
    '"bin":{"type":"directory","entries":{"hi":{"type":"regular","size":18,"executable":true,"narOffset":592},' +
    '"link":{"type":"symlink","target":"../share/readme"}}},"dang":{"type":"symlink","target":"/nonexistent"},' +
    '"empty":{"type":"regular","size":0,"narOffset":1232},"share":{"type":"directory","entries":{"empty":' +
    '{"type":"directory","entries":{}},"readme":{"type":"regular","size":2,"narOffset":1720}}},"ü":' +
    '{"type":"directory","entries":{"Ä":{"type":"regular","size":3,"narOffset":2080}}}}}}';
  assert.equal((await narListing([encodeNar(tree)])).toString('utf8'), nix);
});

test('numeric names keep NAR order, where JS objects would move them first', async () => {
  const tree = dir({ '10': file('1\n'), '2': file('3\n'), a: file('1\n') });
  assert.equal(
    await listing(tree),
    '{"version":1,"root":{"type":"directory","entries":{"10":{"type":"regular","size":2,"narOffset":232},' +
      '"2":{"type":"regular","size":2,"narOffset":424},"a":{"type":"regular","size":2,"narOffset":616}}}}',
  );
});

test('escapes are Nix 2.8 escapes; other bytes, even invalid UTF-8, are copied', async () => {
  // Captured from Nix 2.8 for a file named "\b\f\t\r\x1f" and a symlink to 'x\x01"y'.
  const tree = dir([
    [Buffer.from('\b\f\t\r\x1f'), file('1\n')],
    [Buffer.from('l'), link('x\x01"y')],
  ]);
  assert.equal(
    await listing(tree),
    '{"version":1,"root":{"type":"directory","entries":{"\\u0008\\u000c\\t\\r\\u001f":' +
      '{"type":"regular","size":2,"narOffset":232},"l":{"type":"symlink","target":"x\\u0001\\"y"}}}}',
  );
  assert.deepEqual(
    jsonStringBytes(Buffer.from([0xff, 0x7f, 0x5c, 0x0a])),
    Buffer.from([0x22, 0xff, 0x7f, 0x5c, 0x5c, 0x5c, 0x6e, 0x22]),
  );
});

test('a root file or symlink', async () => {
  assert.equal(
    await listing(file('x')),
    '{"version":1,"root":{"type":"regular","size":1,"narOffset":96}}',
  );
  assert.equal(
    await listing(file('', true)),
    '{"version":1,"root":{"type":"regular","size":0,"executable":true,"narOffset":128}}',
  );
  assert.equal(
    await listing(link('dangling')),
    '{"version":1,"root":{"type":"symlink","target":"dangling"}}',
  );
  assert.equal(await listing(dir({})), '{"version":1,"root":{"type":"directory","entries":{}}}');
});

test('the builder refuses to finish an incomplete NAR', () => {
  const builder = new NarListingBuilder();
  const bytes = encodeNar(dir({ a: file('a') }));
  for (const event of new NarParser().push(bytes.subarray(0, 200))) builder.add(event);
  assert.throws(() => builder.finish(), /before the NAR was complete/);
});

test('narListing validates the NAR on the way', async () => {
  await assert.rejects(narListing([encodeNar(dir({ a: file('') })).subarray(0, 100)]), {
    code: 'FIRN_E_NAR_TRUNCATED',
  });
});

test('text lines look like nix store ls -lR', () => {
  const events = new NarParser().push(
    encodeNar(
      dir({
        bin: dir({ hi: file('0123456789abcdefgh', true), link: link('../x') }),
        r: file('ab'),
      }),
    ),
  );
  const text = Buffer.concat(events.flatMap((e) => formatListingLine(e) ?? [])).toString();
  assert.equal(
    text,
    [
      'dr-xr-xr-x                    0 .',
      'dr-xr-xr-x                    0 ./bin',
      '-r-xr-xr-x                   18 ./bin/hi',
      'lrwxrwxrwx                    0 ./bin/link -> ../x',
      '-r--r--r--                    2 ./r',
      '',
    ].join('\n'),
  );
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { FirnError, type ErrorCode } from '../errors.ts';
import { formatHash, parseHash } from './hash.ts';
import { encodeNix32, NIX32_ALPHABET } from './nix-base32.ts';
import {
  MAX_NARINFO_BYTES,
  parseNarInfo,
  parseNarInfoBytes,
  serializeNarInfo,
  type NarInfo,
} from './narinfo.ts';

// Written by Nix 2.8.0 (`nix copy --to file://…`, then `nix store sign` for the Sig).
const NIX_INPUT_ADDRESSED = `StorePath: /nix/store/c5rkdk5wafp7h9clw0nwp6nwrxppgyyc-x
URL: nar/18yhk57v9dlsyqs5ps5brsbvbkgk69jrpqsynx7baqsp3pyfzadz.nar.xz
Compression: xz
FileHash: sha256:18yhk57v9dlsyqs5ps5brsbvbkgk69jrpqsynx7baqsp3pyfzadz
FileSize: 176
NarHash: sha256:15vgj6l2xgb5vh0laggs2dc9cqnjfc6l6wpkwmcy01qkr4v4hxnf
NarSize: 168
References: i24q8rn139iy6nmkg32ly2ray50cvdc4-dep
Deriver: 2g1dvdangx0g1i8j2wch3dmzvd98gzxd-x.drv
Sig: test-1:Ek1QzcIwS3pExqHIQ05o3iiJbbrzKn78q7Ua8qwI8Y7OK/xr9IYZwFQXHKrk7anjJEDOQYSRhv2qkQ7No+jmCQ==
`;

const NIX_NO_REFERENCES = `StorePath: /nix/store/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep
URL: nar/0443aw61v2y4yjqq6ng6lm7aic6q6h04wyv7chihb5vjks8swi3w.nar.xz
Compression: xz
FileHash: sha256:0443aw61v2y4yjqq6ng6lm7aic6q6h04wyv7chihb5vjks8swi3w
FileSize: 128
NarHash: sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j
NarSize: 120
References: 
Deriver: g04wx39dcx9isz8nn728z6mhlakpfr1r-dep.drv
`;

const NIX_CONTENT_ADDRESSED = `StorePath: /nix/store/6dy6wi10cxrd2jai9gmwpjwpba89ypzd-payload
URL: nar/0a38d18lis4cg1530bb79m7saxi0z51kj160rwnxa38fsf925rwd.nar.zst
Compression: zstd
FileHash: sha256:0a38d18lis4cg1530bb79m7saxi0z51kj160rwnxa38fsf925rwd
FileSize: 137
NarHash: sha256:1bzvfph6f43z5g2v1f4dqlnblj7rhi25y163a2c8ckfap4zshmds
NarSize: 456
References: 
CA: fixed:r:sha256:1bzvfph6f43z5g2v1f4dqlnblj7rhi25y163a2c8ckfap4zshmds
`;

const NIX_FLAT_UNCOMPRESSED = `StorePath: /nix/store/hrvjkyf8i9yx8dmgfbqlsr7xlxa6wmfw-a
URL: nar/1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h.nar
Compression: none
FileHash: sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h
FileSize: 120
NarHash: sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h
NarSize: 120
References: 
CA: fixed:sha256:1r3v22qkypccqifzbww5lrn6hf1chi23m6zzkyvb8bvg457nxslq
`;

const MINIMAL = `StorePath: /nix/store/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep
URL: nar/x.nar
NarHash: sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j
NarSize: 120
`;

function assertFails(text: string, code: ErrorCode, pattern: RegExp): FirnError {
  let caught: unknown;
  try {
    parseNarInfo(text);
  } catch (error) {
    caught = error;
  }
  assert.ok(FirnError.is(caught), `expected a FirnError for ${JSON.stringify(text.slice(0, 200))}`);
  assert.equal(caught.code, code);
  assert.match(caught.message, pattern);
  return caught;
}

function assertInvalid(text: string, pattern: RegExp): FirnError {
  return assertFails(text, 'FIRN_E_NARINFO_INVALID', pattern);
}

/** MINIMAL with `line` put in as line 3 (after URL). */
function withLine(line: string): string {
  const lines = MINIMAL.split('\n');
  lines.splice(2, 0, line);
  return lines.join('\n');
}

describe('parseNarInfo on narinfos Nix 2.8 wrote', () => {
  test('reads every field of an input-addressed, signed narinfo', () => {
    const info = parseNarInfo(NIX_INPUT_ADDRESSED);
    assert.equal(info.storePath, '/nix/store/c5rkdk5wafp7h9clw0nwp6nwrxppgyyc-x');
    assert.equal(info.url, 'nar/18yhk57v9dlsyqs5ps5brsbvbkgk69jrpqsynx7baqsp3pyfzadz.nar.xz');
    assert.equal(info.compression, 'xz');
    assert.equal(
      info.fileHash && formatHash(info.fileHash),
      'sha256:18yhk57v9dlsyqs5ps5brsbvbkgk69jrpqsynx7baqsp3pyfzadz',
    );
    assert.equal(info.fileSize, 176);
    assert.equal(
      formatHash(info.narHash),
      'sha256:15vgj6l2xgb5vh0laggs2dc9cqnjfc6l6wpkwmcy01qkr4v4hxnf',
    );
    assert.equal(info.narSize, 168);
    assert.deepEqual(info.references, ['i24q8rn139iy6nmkg32ly2ray50cvdc4-dep']);
    assert.equal(info.deriver, '2g1dvdangx0g1i8j2wch3dmzvd98gzxd-x.drv');
    assert.equal(info.system, undefined);
    assert.deepEqual(info.sigs, [
      'test-1:Ek1QzcIwS3pExqHIQ05o3iiJbbrzKn78q7Ua8qwI8Y7OK/xr9IYZwFQXHKrk7anjJEDOQYSRhv2qkQ7No+jmCQ==',
    ]);
    assert.equal(info.ca, undefined);
  });

  test('reads an empty References line as no references', () => {
    assert.deepEqual(parseNarInfo(NIX_NO_REFERENCES).references, []);
  });

  test('reads CA', () => {
    assert.equal(
      parseNarInfo(NIX_CONTENT_ADDRESSED).ca,
      'fixed:r:sha256:1bzvfph6f43z5g2v1f4dqlnblj7rhi25y163a2c8ckfap4zshmds',
    );
    assert.equal(
      parseNarInfo(NIX_FLAT_UNCOMPRESSED).ca,
      'fixed:sha256:1r3v22qkypccqifzbww5lrn6hf1chi23m6zzkyvb8bvg457nxslq',
    );
  });

  test('serializes each back to the same bytes', () => {
    for (const text of [
      NIX_INPUT_ADDRESSED,
      NIX_NO_REFERENCES,
      NIX_CONTENT_ADDRESSED,
      NIX_FLAT_UNCOMPRESSED,
    ]) {
      assert.equal(serializeNarInfo(parseNarInfo(text)), text);
    }
  });
});

describe('parseNarInfo defaults and leniency (as Nix 2.8)', () => {
  test('a missing or empty Compression means bzip2', () => {
    assert.equal(parseNarInfo(MINIMAL).compression, 'bzip2');
    assert.equal(parseNarInfo(withLine('Compression: ')).compression, 'bzip2');
    assert.match(serializeNarInfo(parseNarInfo(MINIMAL)), /^Compression: bzip2$/m);
  });

  test('any compression name is kept as written', () => {
    assert.equal(parseNarInfo(withLine('Compression: lz4')).compression, 'lz4');
  });

  test('a missing References line (nix-serve style) means none, and is written back', () => {
    const info = parseNarInfo(MINIMAL);
    assert.deepEqual(info.references, []);
    assert.match(serializeNarInfo(info), /^References: $/m);
  });

  test('References separated by several spaces', () => {
    const refs = 'i24q8rn139iy6nmkg32ly2ray50cvdc4-dep  c5rkdk5wafp7h9clw0nwp6nwrxppgyyc-x ';
    assert.deepEqual(parseNarInfo(withLine(`References: ${refs}`)).references, [
      'i24q8rn139iy6nmkg32ly2ray50cvdc4-dep',
      'c5rkdk5wafp7h9clw0nwp6nwrxppgyyc-x',
    ]);
  });

  test('Deriver: unknown-deriver means no deriver', () => {
    assert.equal(parseNarInfo(withLine('Deriver: unknown-deriver')).deriver, undefined);
  });

  test('hashes in base16, base64 and SRI are read and written as nix32', () => {
    const hash = parseHash('sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j');
    for (const form of [
      formatHash(hash, 'base16'),
      formatHash(hash, 'base64'),
      formatHash(hash, 'sri'),
    ]) {
      const text = MINIMAL.replace(/^NarHash: .*$/m, `NarHash: ${form}`).replace(
        'URL: nar/x.nar\n',
        `URL: nar/x.nar\nFileHash: ${form}\n`,
      );
      const info = parseNarInfo(text);
      assert.deepEqual(info.narHash, hash);
      assert.deepEqual(info.fileHash, hash);
      assert.match(
        serializeNarInfo(info),
        /^NarHash: sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j$/m,
      );
    }
  });

  test('unknown fields are ignored, even repeated', () => {
    const info = parseNarInfo(withLine('Foo: bar') + 'Foo: baz\nX-Custom: 1\n');
    assert.deepEqual(info, parseNarInfo(MINIMAL));
  });

  test('System is read and written after Deriver, before Sig', () => {
    const text = NIX_INPUT_ADDRESSED.replace('Sig: ', 'System: x86_64-linux\nSig: ');
    const info = parseNarInfo(text);
    assert.equal(info.system, 'x86_64-linux');
    assert.equal(serializeNarInfo(info), text);
  });

  test('fields in another order are read and written in Nix order', () => {
    const lines = NIX_INPUT_ADDRESSED.trimEnd().split('\n').reverse();
    assert.equal(serializeNarInfo(parseNarInfo(lines.join('\n') + '\n')), NIX_INPUT_ADDRESSED);
  });

  test('several Sig lines are kept in order', () => {
    const sigA = `a:${Buffer.alloc(64, 1).toString('base64')}`;
    const sigB = `b:${Buffer.alloc(64, 2).toString('base64')}`;
    const text = `${MINIMAL}Sig: ${sigB}\nSig: ${sigA}\n`;
    assert.deepEqual(parseNarInfo(text).sigs, [sigB, sigA]);
  });

  test('a value may contain ": " and a StorePath in another store dir', () => {
    assert.equal(parseNarInfo(withLine('System: a: b')).system, 'a: b');
    const other = MINIMAL.replace('/nix/store/', '/tmp/s/');
    assert.equal(
      parseNarInfo(other, { storeDir: '/tmp/s' }).storePath,
      '/tmp/s/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep',
    );
    assertInvalid(other, /line 1: StorePath .*not directly inside \/nix\/store/);
  });

  test('sizes up to 2^53-1 and leading zeros', () => {
    const max = String(Number.MAX_SAFE_INTEGER);
    assert.equal(
      parseNarInfo(MINIMAL.replace('NarSize: 120', `NarSize: ${max}`)).narSize,
      Number.MAX_SAFE_INTEGER,
    );
    assert.equal(parseNarInfo(withLine('FileSize: 0')).fileSize, 0);
    assert.equal(parseNarInfo(withLine('FileSize: 007')).fileSize, 7);
  });
});

describe('parseNarInfo refuses malformed input', () => {
  test('a last line without a newline, naming the line', () => {
    assertInvalid(MINIMAL.slice(0, -1), /^line 4: the last line does not end in a newline/);
    assertInvalid('StorePath', /^line 1: /);
  });

  test('empty input and each missing required field', () => {
    assertInvalid('', /no StorePath line/);
    for (const field of ['StorePath', 'URL', 'NarHash', 'NarSize']) {
      const text = MINIMAL.replace(new RegExp(`^${field}: .*\\n`, 'm'), '');
      const error = assertInvalid(text, new RegExp(`no ${field} line`));
      assert.deepEqual(error.details, { field });
    }
  });

  test('an empty URL', () => {
    assertInvalid(MINIMAL.replace('URL: nar/x.nar', 'URL: '), /^line 2: URL is empty/);
  });

  test('repeated fields other than Sig, naming the second line', () => {
    for (const line of [
      'References: ',
      'CA: fixed:r:sha256:1bzvfph6f43z5g2v1f4dqlnblj7rhi25y163a2c8ckfap4zshmds',
      'StorePath: /nix/store/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep',
      'URL: nar/y.nar',
      'Compression: xz',
      'NarSize: 120',
      'Deriver: unknown-deriver',
      'System: x',
    ]) {
      const field = line.slice(0, line.indexOf(':'));
      const inMinimal = MINIMAL.includes(`\n${field}: `) || MINIMAL.startsWith(`${field}: `);
      assertInvalid(
        `${MINIMAL}${line}\n${line}\n`,
        new RegExp(`^line ${inMinimal ? 5 : 6}: ${field} appears more than once`),
      );
    }
  });

  test('NarSize 0', () => {
    assertInvalid(MINIMAL.replace('NarSize: 120', 'NarSize: 0'), /^line 4: NarSize is 0/);
  });

  test('sizes that are not plain decimal numbers or are too large', () => {
    for (const bad of ['-1', '+1', '1e3', ' 1', '1 ', '0x10', '', '1.0', '١٢']) {
      assertInvalid(
        MINIMAL.replace('NarSize: 120', `NarSize: ${bad}`),
        /^line 4: NarSize .*not a decimal number/,
      );
      assertInvalid(withLine(`FileSize: ${bad}`), /^line 3: FileSize .*not a decimal number/);
    }
    for (const huge of ['9007199254740992', '18446744073709551616', '9'.repeat(400)]) {
      assertInvalid(
        MINIMAL.replace('NarSize: 120', `NarSize: ${huge}`),
        /^line 4: NarSize .*too large/,
      );
      assertInvalid(withLine(`FileSize: ${huge}`), /^line 3: FileSize .*too large/);
    }
  });

  test('bad hashes', () => {
    for (const bad of [
      'sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1',
      'sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1e',
      '1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j',
      'sha257:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j',
      'sha256-AAAA',
      '',
    ]) {
      assertInvalid(MINIMAL.replace(/^NarHash: .*$/m, `NarHash: ${bad}`), /^line 3: NarHash /);
      assertInvalid(withLine(`FileHash: ${bad}`), /^line 3: FileHash /);
    }
  });

  test('bad store paths, references and derivers', () => {
    assertInvalid(
      MINIMAL.replace('/nix/store/i24q', '/nix/store/e24q'),
      /^line 1: StorePath .*hash part/,
    );
    assertInvalid(MINIMAL.replace('-dep\n', '-d p\n'), /^line 1: StorePath/);
    assertInvalid(MINIMAL.replace('-dep\n', '-dep/bin\n'), /^line 1: StorePath/);
    assertInvalid(
      withLine('References: /nix/store/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep'),
      /^line 3: References/,
    );
    assertInvalid(
      withLine('References: i24q8rn139iy6nmkg32ly2ray50cvdc4-dep x'),
      /^line 3: References "x"/,
    );
    assertInvalid(withLine('Deriver: '), /^line 3: Deriver/);
    assertInvalid(withLine('Deriver: foo.drv'), /^line 3: Deriver/);
  });

  test('malformed signatures', () => {
    const b64 = Buffer.alloc(64, 7).toString('base64');
    for (const bad of [
      'nocolon',
      `:${b64}`,
      'k:',
      `k:${b64.slice(4)}`,
      `k:${b64}AAAA`,
      `k:!${b64.slice(1)}`,
      `a b:${b64}`,
    ]) {
      assertInvalid(withLine(`Sig: ${bad}`), /^line 3: Sig /);
    }
    assert.deepEqual(parseNarInfo(withLine(`Sig: k:${b64.replace(/=+$/, '')}`)).sigs.length, 1);
  });

  test('malformed content addresses', () => {
    const h = '1r3v22qkypccqifzbww5lrn6hf1chi23m6zzkyvb8bvg457nxslq';
    for (const bad of [
      `sha256:${h}`,
      `fixed:${h}`,
      `text:r:sha256:${h}`,
      `text:sha1:${h}`,
      `fixed:r:sha256:${h}x`,
      `other:sha256:${h}`,
      `fixed:r:sha256-${h}`,
    ]) {
      assertInvalid(withLine(`CA: ${bad}`), /^line 3: CA /);
    }
    assert.equal(parseNarInfo(withLine(`CA: text:sha256:${h}`)).ca, `text:sha256:${h}`);
    assert.equal(parseNarInfo(withLine('CA: ')).ca, undefined);
  });

  test('lines that are not "Name: value"', () => {
    assertInvalid(withLine(''), /^line 3: "" is not of the form 'Name: value'/);
    assertInvalid(withLine('NoColon'), /^line 3: "NoColon" is not/);
    assertInvalid(withLine('System:x86_64-linux'), /^line 3: .*is not of the form/);
    assertInvalid(withLine(': value'), /^line 3: .*is not of the form/);
    assertInvalid(withLine('System:'), /^line 3: .*is not of the form/);
  });

  test('CRLF line endings, NUL bytes and other control characters', () => {
    assertInvalid(MINIMAL.replaceAll('\n', '\r\n'), /^line 1: contains a carriage return/);
    assertInvalid(withLine('System: x86\0_64'), /^line 3: contains a NUL byte/);
    assertInvalid(withLine('System: x86\t64'), /^line 3: contains the control character "\\t"/);
    assertInvalid(withLine('URL: a\x7f'), /^line 3: contains the control character/);
  });

  test('input larger than the limit', () => {
    assert.equal(MAX_NARINFO_BYTES, 1024 * 1024);
    const big = MINIMAL + `X-Pad: ${'a'.repeat(MAX_NARINFO_BYTES)}\n`;
    assertFails(big, 'FIRN_E_INPUT_TOO_LARGE', /larger than 1048576 bytes/);
    assert.throws(() => parseNarInfo(MINIMAL, { maxBytes: 50 }), {
      code: 'FIRN_E_INPUT_TOO_LARGE',
    });
    // The limit counts UTF-8 bytes, not characters.
    const wide = MINIMAL + `X-Pad: ${'€'.repeat(40)}\n`;
    assert.throws(() => parseNarInfo(wide, { maxBytes: Buffer.byteLength(wide) - 1 }), {
      code: 'FIRN_E_INPUT_TOO_LARGE',
    });
    assert.equal(parseNarInfo(wide, { maxBytes: Buffer.byteLength(wide) }).narSize, 120);
  });
});

describe('parseNarInfoBytes', () => {
  test('decodes UTF-8 and parses', () => {
    assert.deepEqual(parseNarInfoBytes(Buffer.from(MINIMAL)), parseNarInfo(MINIMAL));
  });

  test('refuses invalid UTF-8 and oversized input', () => {
    assert.throws(
      () => parseNarInfoBytes(Buffer.concat([Buffer.from(MINIMAL), Buffer.from([0xff, 0x0a])])),
      {
        code: 'FIRN_E_NARINFO_INVALID',
        message: /not valid UTF-8/,
      },
    );
    assert.throws(() => parseNarInfoBytes(Buffer.alloc(MAX_NARINFO_BYTES + 1, 0x41)), {
      code: 'FIRN_E_INPUT_TOO_LARGE',
    });
  });
});

describe('serializeNarInfo', () => {
  test('writes optional fields only when present', () => {
    const info: NarInfo = parseNarInfo(MINIMAL);
    assert.equal(
      serializeNarInfo(info),
      `StorePath: /nix/store/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep
URL: nar/x.nar
Compression: bzip2
NarHash: sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j
NarSize: 120
References: 
`,
    );
  });

  test('refuses values that would inject lines', () => {
    const info = parseNarInfo(MINIMAL);
    for (const bad of [
      { ...info, url: 'nar/x.nar\nSig: evil:AAAA' },
      { ...info, system: 'x\r' },
      { ...info, references: ['a\nb'] },
    ]) {
      assert.throws(() => serializeNarInfo(bad), {
        code: 'FIRN_E_NARINFO_INVALID',
        message: /control character/,
      });
    }
  });
});

// ── properties ────────────────────────────────────────────────────────────

const nix32 = (length: number): fc.Arbitrary<string> =>
  fc
    .array(fc.constantFrom(...NIX32_ALPHABET.split('')), { minLength: length, maxLength: length })
    .map((c) => c.join(''));
const storeName = fc
  .array(fc.constantFrom(...'abcXYZ019+-._?='.split('')), { minLength: 1, maxLength: 40 })
  .map((c) => c.join(''));
const baseName = fc.tuple(nix32(32), storeName).map(([hash, name]) => `${hash}-${name}`);
const sha256 = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((digest) => ({ algorithm: 'sha256' as const, digest: Buffer.from(digest) }));
const printable = fc.string({ minLength: 1, maxLength: 40 }); // printable ASCII only
const signature = fc
  .tuple(
    fc
      .array(fc.constantFrom(...'abz09.-_'.split('')), { minLength: 1, maxLength: 20 })
      .map((c) => c.join('')),
    fc.uint8Array({ minLength: 64, maxLength: 64 }),
  )
  .map(([name, bytes]) => `${name}:${Buffer.from(bytes).toString('base64')}`);
const contentAddress = fc
  .tuple(fc.constantFrom('fixed:r:sha256:', 'fixed:sha256:', 'text:sha256:'), sha256)
  .map(([prefix, hash]) => prefix + encodeNix32(hash.digest));

const narInfo: fc.Arbitrary<NarInfo> = fc.record(
  {
    storePath: baseName.map((base) => `/nix/store/${base}`),
    url: printable,
    compression: fc.oneof(fc.constantFrom('xz', 'zstd', 'bzip2', 'none', 'br'), printable),
    fileHash: sha256,
    fileSize: fc.maxSafeNat(),
    narHash: sha256,
    narSize: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    references: fc.array(baseName, { maxLength: 8 }),
    deriver: baseName.map((base) => `${base}.drv`),
    system: printable,
    sigs: fc.array(signature, { maxLength: 4 }),
    ca: contentAddress,
  },
  {
    requiredKeys: ['storePath', 'url', 'compression', 'narHash', 'narSize', 'references', 'sigs'],
    noNullPrototype: true,
  },
);

/** Edits that turn a narinfo into something that may or may not still be one. */
const mutation = fc.oneof(
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    text: fc.string({ maxLength: 8, unit: 'binary' }),
  }),
  fc.record({
    kind: fc.constant('delete' as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 20 }),
  }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate-line' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('swap-char' as const),
    at: fc.nat(),
    char: fc.constantFrom(':', ' ', '\n', '\r', '\0', '=', '-', 'e', '9'),
  }),
);

type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(text: string, m: Mutation): string {
  const at = m.at % (text.length + 1);
  switch (m.kind) {
    case 'insert':
      return text.slice(0, at) + m.text + text.slice(at);
    case 'delete':
      return text.slice(0, at) + text.slice(at + m.length);
    case 'truncate':
      return text.slice(0, at);
    case 'duplicate-line': {
      const lines = text.split('\n');
      const index = m.at % lines.length;
      lines.splice(index, 0, lines[index] ?? '');
      return lines.join('\n');
    }
    case 'swap-char':
      return text.slice(0, at) + m.char + text.slice(at + 1);
  }
}

function parsesOrThrowsFirnError(text: string): void {
  try {
    const info = parseNarInfo(text);
    // Whatever parses must also serialize and parse back to the same thing.
    assert.deepEqual(parseNarInfo(serializeNarInfo(info)), info);
  } catch (error) {
    if (!FirnError.is(error)) throw error;
    assert.ok(
      ['FIRN_E_NARINFO_INVALID', 'FIRN_E_INPUT_TOO_LARGE'].includes(error.code),
      error.code,
    );
  }
}

describe('properties', () => {
  test('every valid narinfo round-trips: parse(serialize(x)) equals x', () => {
    fc.assert(
      fc.property(narInfo, (info) => {
        const text = serializeNarInfo(info);
        const parsed = parseNarInfo(text);
        assert.deepEqual(parsed, info);
        assert.equal(serializeNarInfo(parsed), text);
      }),
      { numRuns: 300 },
    );
  });

  test('mutated narinfos either parse or throw FirnError', () => {
    fc.assert(
      fc.property(
        narInfo,
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        (info, mutations) => {
          let text = serializeNarInfo(info);
          for (const m of mutations) text = mutate(text, m);
          parsesOrThrowsFirnError(text);
        },
      ),
      { numRuns: 500 },
    );
  });

  test('garbage either parses or throws FirnError', () => {
    const line = fc.oneof(
      fc.string({ maxLength: 60, unit: 'binary' }),
      fc
        .tuple(
          fc.constantFrom(
            'StorePath',
            'URL',
            'Compression',
            'FileHash',
            'FileSize',
            'NarHash',
            'NarSize',
            'References',
            'Deriver',
            'System',
            'Sig',
            'CA',
            'constructor',
            '__proto__',
            'toString',
          ),
          fc.string({ maxLength: 60, unit: 'binary' }),
        )
        .map(([key, value]) => `${key}: ${value}`),
    );
    fc.assert(
      fc.property(fc.array(line, { maxLength: 14 }), fc.boolean(), (lines, trailingNewline) => {
        parsesOrThrowsFirnError(lines.join('\n') + (trailingNewline ? '\n' : ''));
      }),
      { numRuns: 500 },
    );
  });
});

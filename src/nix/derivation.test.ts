import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { FirnError } from '../errors.ts';
import {
  compareBytes,
  derivationToJson,
  formatShowDerivation,
  nixJsonString,
  parseDerivation,
  serializeDerivation,
  type Derivation,
  type DerivationOutput,
  type ParseDerivationOptions,
} from './derivation.ts';
import { NIX32_ALPHABET } from './nix-base32.ts';

// Real .drv files written by Nix 2.8 (nix-instantiate), copied byte for byte.
const LIB =
  'Derive([("bin","/nix/store/ygaal8bi4p6sg7ixkmxi67a1jcbvr3fr-lib-bin","",""),("dev","/nix/store/qv0lywnydiyhmg9vcmkikxkwhhq7ym3d-lib-dev","",""),("out","/nix/store/052bzrzgfzkqgzpi0cxwp1znymgk1ypb-lib","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo > $out; echo > $dev; echo > $bin"],[("PATH","/usr/bin:/bin"),("bin","/nix/store/ygaal8bi4p6sg7ixkmxi67a1jcbvr3fr-lib-bin"),("builder","/bin/sh"),("dev","/nix/store/qv0lywnydiyhmg9vcmkikxkwhhq7ym3d-lib-dev"),("name","lib"),("out","/nix/store/052bzrzgfzkqgzpi0cxwp1znymgk1ypb-lib"),("outputs","out dev bin"),("system","x86_64-linux")])';
const FIXED_R =
  'Derive([("out","/nix/store/myyyr5kync7amgj4x9cbnmknxgvdnlvb-fixed-r","r:sha256","118c0909f97236b37b8226c2eba9ad2d2b3b03f0313a87ccd87c9831312321d6")],[],[],"x86_64-linux","/bin/sh",["-c","mkdir $out"],[("PATH","/usr/bin:/bin"),("builder","/bin/sh"),("name","fixed-r"),("out","/nix/store/myyyr5kync7amgj4x9cbnmknxgvdnlvb-fixed-r"),("outputHash","1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i"),("outputHashAlgo","sha256"),("outputHashMode","recursive"),("system","x86_64-linux")])';
const FIXED_F =
  'Derive([("out","/nix/store/nx6d9zv18cdmjmdxlpvccf4396cqd1jc-fixed-f","sha1","da39a3ee5e6b4b0d3255bfef95601890afd80709")],[],[],"x86_64-linux","/bin/sh",["-c","printf \'\' > $out"],[("PATH","/usr/bin:/bin"),("builder","/bin/sh"),("name","fixed-f"),("out","/nix/store/nx6d9zv18cdmjmdxlpvccf4396cqd1jc-fixed-f"),("outputHash","da39a3ee5e6b4b0d3255bfef95601890afd80709"),("outputHashAlgo","sha1"),("system","x86_64-linux")])';
const USER =
  'Derive([("out","/nix/store/i6pgx9qxr14p51rcq6n2paqvv21asx14-user","","")],[("/nix/store/ndnyh33m9n6sz0h9zqacd5jg8iv3alcg-lib.drv",["bin","dev"]),("/nix/store/nj7xrrwvvmp3f1xxj9xazkck4lx32bdx-fixed-f.drv",["out"]),("/nix/store/qq2ayzjscwa5y0wlkmsyr1q8z2n9842s-fixed-r.drv",["out"])],["/nix/store/wny4j3yldvbk79sxby3vh7hbkvshg9bh-in.txt"],"x86_64-linux","/bin/sh",["-c","cat /nix/store/qv0lywnydiyhmg9vcmkikxkwhhq7ym3d-lib-dev /nix/store/ygaal8bi4p6sg7ixkmxi67a1jcbvr3fr-lib-bin /nix/store/myyyr5kync7amgj4x9cbnmknxgvdnlvb-fixed-r > $out"],[("PATH","/usr/bin:/bin"),("builder","/bin/sh"),("f","/nix/store/nx6d9zv18cdmjmdxlpvccf4396cqd1jc-fixed-f"),("name","user"),("out","/nix/store/i6pgx9qxr14p51rcq6n2paqvv21asx14-user"),("src","/nix/store/wny4j3yldvbk79sxby3vh7hbkvshg9bh-in.txt"),("system","x86_64-linux")])';
// system = "x86\t64-li\nnux": Nix writes the system unescaped, so a raw tab and newline.
const WEIRD =
  'Derive([("out","/nix/store/467bznb586h80428dbk9fm91rjgrx0sd-weird","","")],[("/nix/store/sbydnxahpc3l3wl7lbhi6va7kx0ipzlq-dep.drv",["dev"])],["/nix/store/q790zdjk75hm2cn42nh77pqw4gbv1b88-hello.txt"],"x86\t64-li\nnux","/bin/sh",["-c","echo \\"hi\\" \\\\ \\n\\t done"],[("PATH","/usr/bin:/bin"),("builder","/bin/sh"),("d","/nix/store/q6n4ay9s6fd0dablbkyzf6d7mphh8d4v-dep-dev"),("name","weird"),("out","/nix/store/467bznb586h80428dbk9fm91rjgrx0sd-weird"),("s","quote\\" back\\\\ nl\\n tab\\t cr\\r uni é ☃ 😀 ctl u0001"),("src","/nix/store/q790zdjk75hm2cn42nh77pqw4gbv1b88-hello.txt"),("system","x86\\t64-li\\nnux")])';
// Content-addressed (ca-derivations), deferred and impure outputs.
const CA =
  'Derive([("out","","r:sha256","")],[],[],"x86_64-linux","/bin/sh",["-c","echo > $out"],[("PATH","/usr/bin:/bin"),("builder","/bin/sh"),("name","ca"),("out","/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"),("outputHashAlgo","sha256"),("outputHashMode","recursive"),("system","x86_64-linux")])';
const DEFERRED =
  'Derive([("out","","","")],[("/nix/store/az6pysxidpcd276zhcg54xx6zj95hh4k-ca.drv",["out"])],[],"x86_64-linux","/bin/sh",["-c","cat /18vs2z04bqwa2mb73qyhw0cy4harsrlzgim902cc95ymq64al0p0 > $out"],[("PATH","/usr/bin:/bin"),("builder","/bin/sh"),("name","deferred"),("out",""),("system","x86_64-linux")])';
const IMPURE =
  'Derive([("out","","r:sha256","impure")],[],[],"x86_64-linux","/bin/sh",["-c","echo > $out"],[("PATH","/usr/bin:/bin"),("builder","/bin/sh"),("name","impure"),("out","/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"),("system","x86_64-linux")])';

const FIXTURES = { LIB, FIXED_R, FIXED_F, USER, WEIRD, CA, DEFERRED, IMPURE };

/** A minimal valid derivation with `env` spliced in, for targeted cases. */
function withEnv(env: string): string {
  return `Derive([("out","/nix/store/052bzrzgfzkqgzpi0cxwp1znymgk1ypb-lib","","")],[],[],"x","/bin/sh",[],[${env}])`;
}

function assertInvalid(
  input: string | Uint8Array,
  offset: number,
  message?: RegExp,
  options?: ParseDerivationOptions,
): void {
  assert.throws(
    () => parseDerivation(input, options),
    (error: unknown) => {
      assert.ok(FirnError.is(error), `expected a FirnError, got ${String(error)}`);
      assert.equal(error.code, 'FIRN_E_DRV_INVALID');
      assert.equal(error.details?.offset, offset, error.message);
      assert.match(error.message, new RegExp(`at byte ${offset}:`));
      if (message !== undefined) assert.match(error.message, message);
      return true;
    },
  );
}

test('every Nix-written fixture round trips byte for byte, from text and from bytes', () => {
  for (const [name, text] of Object.entries(FIXTURES)) {
    assert.equal(serializeDerivation(parseDerivation(text)), text, name);
    const bytes = Buffer.from(text, 'utf8');
    assert.ok(Buffer.from(serializeDerivation(parseDerivation(bytes))).equals(bytes), name);
  }
});

test('multiple outputs are read in order with their paths', () => {
  const drv = parseDerivation(LIB);
  assert.deepEqual([...drv.outputs.keys()], ['bin', 'dev', 'out']);
  assert.deepEqual(drv.outputs.get('dev'), {
    path: '/nix/store/qv0lywnydiyhmg9vcmkikxkwhhq7ym3d-lib-dev',
    hashAlgo: '',
    hash: '',
  });
  assert.equal(drv.system, 'x86_64-linux');
  assert.equal(drv.builder, '/bin/sh');
  assert.deepEqual(drv.args, ['-c', 'echo > $out; echo > $dev; echo > $bin']);
  assert.equal(drv.env.get('outputs'), 'out dev bin');
  assert.equal(drv.env.size, 8);
});

test('input derivations keep several output names; input sources are store paths', () => {
  const drv = parseDerivation(USER);
  assert.deepEqual(
    drv.inputDrvs,
    new Map([
      ['/nix/store/ndnyh33m9n6sz0h9zqacd5jg8iv3alcg-lib.drv', ['bin', 'dev']],
      ['/nix/store/nj7xrrwvvmp3f1xxj9xazkck4lx32bdx-fixed-f.drv', ['out']],
      ['/nix/store/qq2ayzjscwa5y0wlkmsyr1q8z2n9842s-fixed-r.drv', ['out']],
    ]),
  );
  assert.deepEqual(drv.inputSrcs, ['/nix/store/wny4j3yldvbk79sxby3vh7hbkvshg9bh-in.txt']);
});

test('fixed-output derivations: recursive and flat, hash in base 16', () => {
  assert.deepEqual(parseDerivation(FIXED_R).outputs.get('out'), {
    path: '/nix/store/myyyr5kync7amgj4x9cbnmknxgvdnlvb-fixed-r',
    hashAlgo: 'r:sha256',
    hash: '118c0909f97236b37b8226c2eba9ad2d2b3b03f0313a87ccd87c9831312321d6',
  });
  assert.deepEqual(parseDerivation(FIXED_F).outputs.get('out'), {
    path: '/nix/store/nx6d9zv18cdmjmdxlpvccf4396cqd1jc-fixed-f',
    hashAlgo: 'sha1',
    hash: 'da39a3ee5e6b4b0d3255bfef95601890afd80709',
  });
});

test('a fixed-output hash in nix-base32 or upper-case hex is read as Nix does and written in base 16', () => {
  const hex = '118c0909f97236b37b8226c2eba9ad2d2b3b03f0313a87ccd87c9831312321d6';
  for (const form of ['1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i', hex.toUpperCase()]) {
    const drv = parseDerivation(FIXED_R.replace(`"${hex}"`, `"${form}"`));
    assert.equal(drv.outputs.get('out')?.hash, hex);
    assert.equal(serializeDerivation(drv), FIXED_R);
  }
});

test('floating content-addressed, deferred and impure outputs have no path', () => {
  assert.deepEqual(parseDerivation(CA).outputs.get('out'), {
    path: '',
    hashAlgo: 'r:sha256',
    hash: '',
  });
  assert.deepEqual(parseDerivation(DEFERRED).outputs.get('out'), {
    path: '',
    hashAlgo: '',
    hash: '',
  });
  assert.deepEqual(parseDerivation(IMPURE).outputs.get('out'), {
    path: '',
    hashAlgo: 'r:sha256',
    hash: 'impure',
  });
});

test('escapes decode as in Nix 2.8: \\" \\\\ \\n \\r \\t, and any other escaped character stands for itself', () => {
  const drv = parseDerivation(WEIRD);
  assert.equal(drv.system, 'x86\t64-li\nnux');
  assert.deepEqual(drv.args, ['-c', 'echo "hi" \\ \n\t done']);
  assert.equal(drv.env.get('s'), 'quote" back\\ nl\n tab\t cr\r uni é ☃ 😀 ctl u0001');
  const odd = parseDerivation(withEnv('("a","\\a\\$\\é\\😀\\\\\\"")'));
  assert.equal(odd.env.get('a'), 'a$é😀\\"');
  // Written back in Nix's canonical form: only the five escapes.
  assert.ok(serializeDerivation(odd).includes('[("a","a$é😀\\\\\\"")]'));
});

test('serialization escapes env, args and builder but writes the system raw, as Nix does', () => {
  const drv: Derivation = {
    ...parseDerivation(LIB),
    system: 'sys\ttem\n"q"\\',
    builder: 'b"\r',
    args: ['\n', ''],
    env: new Map([['k\t', 'v\\']]),
  };
  const text = serializeDerivation(drv);
  assert.ok(
    text.endsWith(',"sys\ttem\n\\"q\\"\\\\","b\\"\\r",["\\n",""],[("k\\t","v\\\\")])'),
    text,
  );
  assert.deepEqual(parseDerivation(text), drv);
});

test('serialization sorts maps and sets by UTF-8 bytes and drops duplicate set members', () => {
  const base = parseDerivation(USER);
  const drv: Derivation = {
    ...base,
    inputDrvs: new Map([...base.inputDrvs].reverse().map(([k, v]) => [k, [...v, ...v].reverse()])),
    inputSrcs: [...base.inputSrcs, ...base.inputSrcs],
    env: new Map([...base.env].reverse()),
  };
  assert.equal(serializeDerivation(drv), USER);
  // U+FFFD sorts before U+1F600 in UTF-8, though after it in UTF-16.
  const env = new Map([
    ['a😀', '1'],
    ['a\uFFFD', '2'],
    ['a', '0'],
  ]);
  const text = serializeDerivation({ ...base, env });
  assert.ok(text.endsWith('[("a","0"),("a\uFFFD","2"),("a😀","1")])'));
  assert.deepEqual([...parseDerivation(text).env.keys()], ['a', 'a\uFFFD', 'a😀']);
});

test('compareBytes orders by code point', () => {
  assert.ok(compareBytes('\uFFFD', '😀') < 0);
  assert.ok(compareBytes('a', 'ab') < 0);
  assert.ok(compareBytes('B', 'a') < 0);
  assert.equal(compareBytes('é', 'é'), 0);
  assert.ok(compareBytes('\uE000', '\uD7FF') > 0);
});

test('derivationToJson matches nix show-derivation (as parsed JSON)', () => {
  const path = '/nix/store/qq2ayzjscwa5y0wlkmsyr1q8z2n9842s-fixed-r.drv';
  assert.deepEqual(derivationToJson(path, parseDerivation(FIXED_R)), {
    [path]: {
      outputs: {
        out: {
          path: '/nix/store/myyyr5kync7amgj4x9cbnmknxgvdnlvb-fixed-r',
          hashAlgo: 'r:sha256',
          hash: '118c0909f97236b37b8226c2eba9ad2d2b3b03f0313a87ccd87c9831312321d6',
        },
      },
      inputSrcs: [],
      inputDrvs: {},
      system: 'x86_64-linux',
      builder: '/bin/sh',
      args: ['-c', 'mkdir $out'],
      env: {
        PATH: '/usr/bin:/bin',
        builder: '/bin/sh',
        name: 'fixed-r',
        out: '/nix/store/myyyr5kync7amgj4x9cbnmknxgvdnlvb-fixed-r',
        outputHash: '1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i',
        outputHashAlgo: 'sha256',
        outputHashMode: 'recursive',
        system: 'x86_64-linux',
      },
    },
  });
  const outputs = (drv: string): unknown =>
    (derivationToJson('p', parseDerivation(drv)).p as { outputs: unknown }).outputs;
  assert.deepEqual(outputs(CA), { out: { hashAlgo: 'r:sha256' } });
  assert.deepEqual(outputs(DEFERRED), { out: {} });
  assert.deepEqual(outputs(IMPURE), { out: { hashAlgo: 'r:sha256', impure: true } });
});

test('formatShowDerivation prints exactly what nix show-derivation prints', () => {
  // Output of `nix show-derivation` (Nix 2.8) for DEFERRED.
  const expected = `{
  "/nix/store/87j524h18za55p45pd5jlzp161nld7xq-deferred.drv": {
    "outputs": {
      "out": {}
    },
    "inputSrcs": [],
    "inputDrvs": {
      "/nix/store/az6pysxidpcd276zhcg54xx6zj95hh4k-ca.drv": [
        "out"
      ]
    },
    "system": "x86_64-linux",
    "builder": "/bin/sh",
    "args": [
      "-c",
      "cat /18vs2z04bqwa2mb73qyhw0cy4harsrlzgim902cc95ymq64al0p0 > $out"
    ],
    "env": {
      "PATH": "/usr/bin:/bin",
      "builder": "/bin/sh",
      "name": "deferred",
      "out": "",
      "system": "x86_64-linux"
    }
  }
}
`;
  const path = '/nix/store/87j524h18za55p45pd5jlzp161nld7xq-deferred.drv';
  assert.equal(formatShowDerivation([[path, parseDerivation(DEFERRED)]]), expected);
  assert.equal(formatShowDerivation([]), '{}\n');
});

test('formatShowDerivation sorts and deduplicates paths and keeps env keys in byte order', () => {
  const drv = parseDerivation(withEnv('("10","a"),("2","b"),("__proto__","c")'));
  const text = formatShowDerivation([
    ['/b', drv],
    ['/a', drv],
    ['/b', drv],
  ]);
  const parsed = JSON.parse(text) as Record<string, { env: Record<string, string> }>;
  assert.deepEqual(Object.keys(parsed), ['/a', '/b']);
  assert.ok(text.includes('"env": {\n      "10": "a",\n      "2": "b",\n      "__proto__": "c"\n'));
  assert.equal(Object.getOwnPropertyDescriptor(parsed['/a']?.env, '__proto__')?.value, 'c');
  const json = derivationToJson('/a', drv) as Record<string, { env: object }>;
  assert.deepEqual(json, { '/a': parsed['/a'] });
});

test('nixJsonString escapes like Nix: \\u00XX for control characters, DEL and non-ASCII raw', () => {
  assert.equal(nixJsonString('a"b\\c\nd\re\tf'), '"a\\"b\\\\c\\nd\\re\\tf"');
  assert.equal(nixJsonString('\u0000\u0001\b\f\u001f'), '"\\u0000\\u0001\\u0008\\u000c\\u001f"');
  assert.equal(nixJsonString('\u007fé😀/'), '"\u007fé😀/"');
  assert.deepEqual(JSON.parse(nixJsonString('\u0001x\u007f')), '\u0001x\u007f');
});

test('malformed input is FIRN_E_DRV_INVALID at the right byte offset', () => {
  const cases: [string, number, RegExp?][] = [
    ['', 0, /expected 'Derive\('/],
    ['Derive(', 7, /found the end of the input/],
    ['Derive([', 8],
    [LIB.slice(0, -1), LIB.length - 1],
    [LIB.slice(0, -2), LIB.length - 2],
    [LIB + '\n', LIB.length, /unexpected data after the derivation/],
    [LIB + ')', LIB.length],
    [' ' + LIB, 0],
    ['Derive([("out"', 14],
    ['Derive([("out","/nix/sto', 15, /unterminated string/],
    ['Derive([("out","\\', 16, /ends inside an escape/],
    [LIB.replace('[],[],"x86', '[,],[],"x86'), LIB.indexOf('[],[],"x86') + 1],
    [LIB.replace('"-c","echo', '"-c""echo'), LIB.indexOf('"-c","echo') + 4],
    [LIB.replace('"-c","echo', '"-c",,"echo'), LIB.indexOf('"-c","echo') + 5],
    [LIB.replace('"-c","echo', '"-c", "echo'), LIB.indexOf('"-c","echo') + 5],
    [LIB.replace('$bin"]', '$bin",]'), LIB.indexOf('$bin"]') + 6],
    ['Derive([],[],[],"x","/bin/sh",[],[])', 8, /at least one output/],
    ['Derive(["out"])', 8, /expected '\('/],
  ];
  for (const [text, offset, message] of cases) assertInvalid(text, offset, message);
});

test('paths must be store paths in the store directory', () => {
  const at = LIB.indexOf('"/nix/store/ygaal8');
  assertInvalid(LIB.replace('/nix/store/ygaal8', '/nix/stor/ygaal8'), at, /not a store path/);
  assertInvalid(LIB.replace('/nix/store/ygaal8', '/nix/store/ygaae8'), at, /nix-base32/);
  assertInvalid(LIB.replace('-lib-bin","', '-lib bin","'), at, /character/);
  assertInvalid(LIB.replace('-lib-bin","', '-lib/bin","'), at, /below a store path/);
  assertInvalid(LIB.replace('/nix/store/ygaal8', 'nix/store/ygaal8'), at, /not a store path/);
  assertInvalid(LIB, at, /not directly inside \/gnu\/store/, { storeDir: '/gnu/store' });
  const userAt = USER.indexOf('"/nix/store/ndnyh');
  assertInvalid(USER.replace('-lib.drv"', '-lib.drx"'), userAt, /does not end in \.drv/);
  const srcAt = USER.indexOf('"/nix/store/wny4');
  assertInvalid(USER.replace('/nix/store/wny4', '/tmp/wny4'), srcAt, /not a store path/);
  // The same file under another store directory is fine.
  const gnu = LIB.replaceAll('/nix/store/', '/gnu/store/');
  assert.equal(serializeDerivation(parseDerivation(gnu, { storeDir: '/gnu/store' })), gnu);
  assertInvalid(gnu, gnu.indexOf('"/gnu/store/'), /not directly inside \/nix\/store/);
});

test('output names, hash algorithms and hashes are checked', () => {
  const hexAt = FIXED_R.indexOf('"118c');
  assertInvalid(FIXED_R.replace('"118c', '"118x'), hexAt, /is not a sha256 hash/);
  assertInvalid(FIXED_R.replace('"118c', '"118'), hexAt, /is not a sha256 hash/);
  const algoAt = FIXED_R.indexOf('"r:sha256"');
  assertInvalid(FIXED_R.replace('"r:sha256"', '"r:sha257"'), algoAt, /unknown output hash/);
  assertInvalid(FIXED_R.replace('"r:sha256"', '"x:sha256"'), algoAt, /unknown output hash/);
  assertInvalid(FIXED_R.replace('"r:sha256"', '""'), algoAt + 3, /hash but no hash algorithm/);
  assertInvalid(
    CA.replace('("out","",', '("out","/nix/store/052bzrzgfzkqgzpi0cxwp1znymgk1ypb-lib",'),
    15,
    /floating or impure output cannot have a path/,
  );
  assertInvalid(
    FIXED_R.replace('"/nix/store/myyyr5kync7amgj4x9cbnmknxgvdnlvb-fixed-r","r', '"","r'),
    15,
    /not a store path/,
  );
  assertInvalid(LIB.replace('("bin"', '("b n"'), 9, /invalid output name/);
  assertInvalid(LIB.replace('("bin"', '(""'), 9, /invalid output name/);
  const inputAt = USER.indexOf('["bin","dev"]') + 1;
  assertInvalid(
    USER.replace('["bin","dev"]', '["bin","d\\"v"]'),
    inputAt + 6,
    /invalid output name/,
  );
});

test('maps and sets must be sorted and without duplicates', () => {
  assertInvalid(
    withEnv('("b","1"),("a","2")'),
    withEnv('').length - 2 + '("b","1"),'.length,
    /out of order/,
  );
  assertInvalid(
    withEnv('("a","1"),("a","2")'),
    withEnv('').length - 2 + '("a","1"),'.length,
    /duplicate environment variable "a"/,
  );
  const outputsSwapped = LIB.replace(
    '("bin","/nix/store/ygaal8bi4p6sg7ixkmxi67a1jcbvr3fr-lib-bin","",""),("dev","/nix/store/qv0lywnydiyhmg9vcmkikxkwhhq7ym3d-lib-dev","","")',
    '("dev","/nix/store/qv0lywnydiyhmg9vcmkikxkwhhq7ym3d-lib-dev","",""),("bin","/nix/store/ygaal8bi4p6sg7ixkmxi67a1jcbvr3fr-lib-bin","","")',
  );
  assertInvalid(
    outputsSwapped,
    outputsSwapped.indexOf('("bin"'),
    /output name "bin" is out of order/,
  );
  assertInvalid(
    USER.replace('["bin","dev"]', '["dev","bin"]'),
    USER.indexOf('["bin","dev"]') + 7,
    /out of order/,
  );
  assertInvalid(
    USER.replace('["bin","dev"]', '["bin","bin"]'),
    USER.indexOf('["bin","dev"]') + 7,
    /duplicate output name/,
  );
  const src = '"/nix/store/wny4j3yldvbk79sxby3vh7hbkvshg9bh-in.txt"';
  assertInvalid(
    USER.replace(`[${src}]`, `[${src},${src}]`),
    USER.indexOf(src) + src.length + 1,
    /duplicate input source/,
  );
  // UTF-16 order is not byte order: "a😀" before "a\uFFFD" is out of order for Nix.
  assertInvalid(
    withEnv('("a😀","1"),("a\uFFFD","2")'),
    Buffer.byteLength(withEnv('').slice(0, -2) + '("a😀","1"),'),
    /out of order/,
  );
});

test('offsets count UTF-8 bytes, and invalid UTF-8 is reported at the bad byte', () => {
  const text = withEnv('("é😀","1"),("a","2")');
  assertInvalid(text, Buffer.byteLength(withEnv('').slice(0, -2) + '("é😀","1"),'), /out of order/);
  const good = Buffer.from(withEnv('("k","vé")'));
  const e = good.indexOf(Buffer.from('é'));
  for (const bad of [
    [0xff],
    [0xc3],
    [0xc0, 0xaf],
    [0xed, 0xa0, 0x80],
    [0xf4, 0x90, 0x80, 0x80],
    [0xe2, 0x82],
  ]) {
    const bytes = Buffer.concat([good.subarray(0, e), Buffer.from(bad), good.subarray(e + 2)]);
    assertInvalid(bytes, e, /not valid UTF-8/);
  }
});

test('inputs over maxBytes are refused before parsing, as text and as bytes', () => {
  assertInvalid(LIB, 100, /larger than the limit of 100 bytes/, { maxBytes: 100 });
  assert.throws(() => parseDerivation(Buffer.from(LIB), { maxBytes: 100 }), /limit of 100/);
  // Exactly at the limit is fine; multi-byte characters count as bytes.
  assert.ok(parseDerivation(LIB, { maxBytes: LIB.length }));
  const wide = withEnv('("k","😀😀")');
  assert.throws(() => parseDerivation(wide, { maxBytes: wide.length + 3 }), /limit/);
  assert.ok(parseDerivation(wide, { maxBytes: wide.length + 4 }));
});

test('hostile shapes fail fast without stack or range errors', () => {
  assertInvalid('Derive(' + '['.repeat(1_000_000), 8);
  const manyEscapes = withEnv(`("k","${'\\n'.repeat(500_000)}`);
  const started = Date.now();
  assertInvalid(manyEscapes, withEnv('').length - 2 + '("k",'.length, /unterminated string/);
  const long = parseDerivation(withEnv(`("k","${'\\"'.repeat(500_000)}")`));
  assert.equal(long.env.get('k')?.length, 500_000);
  assert.ok(Date.now() - started < 5000, 'linear time in the number of escapes');
});

// ── properties ────────────────────────────────────────────────────────────────────────────────

const NAME_CHARS = Array.from(
  'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-._?=',
);
const nameArb = fc.string({ unit: fc.constantFrom(...NAME_CHARS), minLength: 1, maxLength: 12 });
const hashPartArb = fc.string({
  unit: fc.constantFrom(...Array.from(NIX32_ALPHABET)),
  minLength: 32,
  maxLength: 32,
});
const storePathArb = fc
  .tuple(hashPartArb, nameArb)
  .map(([hash, name]) => `/nix/store/${hash}-${name}`);
const drvPathArb = storePathArb.map((path) => `${path}.drv`);
const anyString = fc.string({ unit: 'binary', maxLength: 20 });
const algoArb = fc.tuple(
  fc.constantFrom('', 'r:'),
  fc.constantFrom(
    ['md5', 16] as const,
    ['sha1', 20] as const,
    ['sha256', 32] as const,
    ['sha512', 64] as const,
  ),
);
const outputArb: fc.Arbitrary<DerivationOutput> = fc.oneof(
  storePathArb.map((path) => ({ path, hashAlgo: '', hash: '' })),
  fc
    .tuple(storePathArb, algoArb, fc.uint8Array({ minLength: 64, maxLength: 64 }))
    .map(([path, [mode, [algo, size]], bytes]) => ({
      path,
      hashAlgo: mode + algo,
      hash: Buffer.from(bytes.subarray(0, size)).toString('hex'),
    })),
  algoArb.map(([mode, [algo]]) => ({ path: '', hashAlgo: mode + algo, hash: '' })),
  algoArb.map(([mode, [algo]]) => ({ path: '', hashAlgo: mode + algo, hash: 'impure' })),
  fc.constant({ path: '', hashAlgo: '', hash: '' }),
);
const sortedMap = <V>(entries: [string, V][]): Map<string, V> =>
  new Map(entries.sort(([a], [b]) => compareBytes(a, b)));
const derivationArb: fc.Arbitrary<Derivation> = fc
  .record({
    outputs: fc
      .uniqueArray(fc.tuple(nameArb, outputArb), {
        selector: ([k]) => k,
        minLength: 1,
        maxLength: 4,
      })
      .map(sortedMap),
    inputDrvs: fc
      .uniqueArray(
        fc.tuple(
          drvPathArb,
          fc.uniqueArray(nameArb, { maxLength: 3 }).map((n) => n.sort(compareBytes)),
        ),
        { selector: ([k]) => k, maxLength: 3 },
      )
      .map(sortedMap),
    inputSrcs: fc.uniqueArray(storePathArb, { maxLength: 3 }).map((p) => p.sort(compareBytes)),
    system: anyString,
    builder: anyString,
    args: fc.array(anyString, { maxLength: 4 }),
    env: fc
      .uniqueArray(fc.tuple(anyString, anyString), { selector: ([k]) => k, maxLength: 6 })
      .map(sortedMap),
  })
  // fc.record builds null-prototype objects; the parser returns plain ones.
  .map((drv) => ({ ...drv }));

test('property: random derivations survive serialize → parse unchanged', () => {
  fc.assert(
    fc.property(derivationArb, (drv) => {
      const text = serializeDerivation(drv);
      const parsed = parseDerivation(text);
      assert.deepEqual(parsed, drv);
      assert.equal(serializeDerivation(parsed), text);
    }),
    { numRuns: 300 },
  );
});

const mutationArb = fc.oneof(
  fc.nat().map((n) => (s: string) => s.slice(0, n % (s.length + 1))),
  fc
    .tuple(
      fc.nat(),
      fc.constantFrom('"', '\\', ',', '[', ']', '(', ')', 'a', '/', '\n', 'é', '😀', 'r:'),
    )
    .map(
      ([n, c]) =>
        (s: string) =>
          s.slice(0, n % (s.length + 1)) + c + s.slice(n % (s.length + 1)),
    ),
  fc.nat().map((n) => (s: string) => s.slice(0, n % s.length) + s.slice((n % s.length) + 1)),
  fc.tuple(fc.nat(), fc.nat({ max: 40 }), fc.nat()).map(([from, length, to]) => (s: string) => {
    const piece = s.slice(from % s.length, (from % s.length) + length);
    const at = to % (s.length + 1);
    return s.slice(0, at) + piece + s.slice(at);
  }),
);

function parseOrFirnError(input: string | Uint8Array): void {
  let drv: Derivation;
  try {
    drv = parseDerivation(input);
  } catch (error) {
    assert.ok(FirnError.is(error), `not a FirnError: ${String(error)}`);
    assert.equal(error.code, 'FIRN_E_DRV_INVALID');
    const offset = error.details?.offset;
    const size = typeof input === 'string' ? Buffer.byteLength(input) : input.length;
    assert.ok(
      typeof offset === 'number' && offset >= 0 && offset <= size,
      `offset ${String(offset)}`,
    );
    return;
  }
  // Whatever parses is written back in a form that reads the same.
  assert.deepEqual(parseDerivation(serializeDerivation(drv)), drv);
}

test('property: mutated and truncated derivations either parse or fail with FIRN_E_DRV_INVALID', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...Object.values(FIXTURES)),
      fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
      (text, mutations) => {
        parseOrFirnError(mutations.reduce((s, mutate) => mutate(s), text));
      },
    ),
    { numRuns: 1500 },
  );
});

test('property: byte-level damage (including invalid UTF-8) parses or fails with FIRN_E_DRV_INVALID', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...Object.values(FIXTURES)),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 4,
      }),
      (text, edits) => {
        const bytes = Buffer.from(text);
        for (const [at, value] of edits) bytes[at % bytes.length] = value;
        parseOrFirnError(bytes);
      },
    ),
    { numRuns: 1000 },
  );
});

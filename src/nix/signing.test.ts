import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { FirnError } from '../errors.ts';
import { parseNarInfo, serializeNarInfo, type NarInfo } from './narinfo.ts';
import {
  fingerprintNarInfo,
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  keyNameProblem,
  parsePublicKey,
  parseSecretKey,
  publicKeyOf,
  readPublicKeyFile,
  readSecretKeyFile,
  signatureProblem,
  signNarInfo,
  verifyNarInfo,
  withSignature,
  writePublicKeyFile,
  writeSecretKeyFile,
} from './signing.ts';

// A throwaway test-only key made by `nix-store --generate-binary-cache-key test-1 sk pk` (Nix 2.8.0).
const NIX_SECRET =
  'test-1:FWVthi92HW3WQI6pRYP9deLPwFxvDLslpwhv8qAQ4VK1f2+nvFJM210xJK/bnCb8fL2O15r3t8FyjpS96Edemw==';
const NIX_PUBLIC = 'test-1:tX9vp7xSTNtdMSSv25wm/Hy9jtea97fBco6UvehHXps=';

// `nix copy --to file://…` output; the Sig values are what `nix store sign -k sk` then added.
const UNSIGNED_X = `StorePath: /nix/store/c5rkdk5wafp7h9clw0nwp6nwrxppgyyc-x
URL: nar/18yhk57v9dlsyqs5ps5brsbvbkgk69jrpqsynx7baqsp3pyfzadz.nar.xz
Compression: xz
FileHash: sha256:18yhk57v9dlsyqs5ps5brsbvbkgk69jrpqsynx7baqsp3pyfzadz
FileSize: 176
NarHash: sha256:15vgj6l2xgb5vh0laggs2dc9cqnjfc6l6wpkwmcy01qkr4v4hxnf
NarSize: 168
References: i24q8rn139iy6nmkg32ly2ray50cvdc4-dep
Deriver: 2g1dvdangx0g1i8j2wch3dmzvd98gzxd-x.drv
`;
const NIX_SIG_X =
  'test-1:Ek1QzcIwS3pExqHIQ05o3iiJbbrzKn78q7Ua8qwI8Y7OK/xr9IYZwFQXHKrk7anjJEDOQYSRhv2qkQ7No+jmCQ==';

const UNSIGNED_DEP = `StorePath: /nix/store/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep
URL: nar/0443aw61v2y4yjqq6ng6lm7aic6q6h04wyv7chihb5vjks8swi3w.nar.xz
Compression: xz
FileHash: sha256:0443aw61v2y4yjqq6ng6lm7aic6q6h04wyv7chihb5vjks8swi3w
FileSize: 128
NarHash: sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j
NarSize: 120
References: 
Deriver: g04wx39dcx9isz8nn728z6mhlakpfr1r-dep.drv
`;
const NIX_SIG_DEP =
  'test-1:9YLaor3+/YDWyIWhveFzdl4tm8+uYqckZWdMHx4WvbkbFDt9nsfsGHKm6YBRHbK/MmI7TEEwEM95b9U1ApB4Bw==';

function keyError(fn: () => unknown, pattern: RegExp): FirnError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(FirnError.is(caught), 'expected a FirnError');
  assert.equal(caught.code, 'FIRN_E_KEY_INVALID');
  assert.match(caught.message, pattern);
  return caught;
}

/** No 8-character run of the key's base64 may show up in a message. */
function assertNoSecretIn(text: string, secret: string): void {
  const b64 = secret.slice(secret.indexOf(':') + 1);
  for (let i = 0; i + 8 <= b64.length; i++) {
    assert.ok(!text.includes(b64.slice(i, i + 8)), `message leaks the secret key: ${text}`);
  }
}

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'firn-signing-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

describe('keys made by Nix', () => {
  test('the secret key parses and derives the public key Nix wrote', () => {
    const key = parseSecretKey(NIX_SECRET);
    assert.equal(key.name, 'test-1');
    assert.equal(key.seed.length, 32);
    assert.equal(formatPublicKey(publicKeyOf(key)), NIX_PUBLIC);
    assert.equal(formatSecretKey(key), NIX_SECRET);
    assert.deepEqual(parsePublicKey(NIX_PUBLIC), publicKeyOf(key));
  });

  test('firn signs byte for byte as `nix store sign`', () => {
    const key = parseSecretKey(NIX_SECRET);
    assert.equal(signNarInfo(parseNarInfo(UNSIGNED_X), key), NIX_SIG_X);
    assert.equal(signNarInfo(parseNarInfo(UNSIGNED_DEP), key), NIX_SIG_DEP);
    assert.equal(
      serializeNarInfo(withSignature(parseNarInfo(UNSIGNED_X), key)),
      `${UNSIGNED_X}Sig: ${NIX_SIG_X}\n`,
    );
  });

  test("Nix's signatures verify under its public key", () => {
    const pub = parsePublicKey(NIX_PUBLIC);
    assert.equal(verifyNarInfo(parseNarInfo(`${UNSIGNED_X}Sig: ${NIX_SIG_X}\n`), [pub]), pub);
    assert.equal(verifyNarInfo(parseNarInfo(`${UNSIGNED_DEP}Sig: ${NIX_SIG_DEP}\n`), [pub]), pub);
  });
});

describe('fingerprintNarInfo', () => {
  test('is 1;path;narHash;narSize;full reference paths', () => {
    assert.equal(
      fingerprintNarInfo(parseNarInfo(UNSIGNED_X)),
      '1;/nix/store/c5rkdk5wafp7h9clw0nwp6nwrxppgyyc-x;sha256:15vgj6l2xgb5vh0laggs2dc9cqnjfc6l6wpkwmcy01qkr4v4hxnf;168;/nix/store/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep',
    );
    assert.equal(
      fingerprintNarInfo(parseNarInfo(UNSIGNED_DEP)),
      '1;/nix/store/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep;sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j;120;',
    );
  });

  test('sorts and deduplicates references, writes the hash in nix32 whatever was read', () => {
    const info = parseNarInfo(
      UNSIGNED_DEP.replace(
        'References: ',
        'References: i24q8rn139iy6nmkg32ly2ray50cvdc4-dep c5rkdk5wafp7h9clw0nwp6nwrxppgyyc-x i24q8rn139iy6nmkg32ly2ray50cvdc4-dep',
      ).replace(
        'NarHash: sha256:1ki2x7c1x2lddynh734cbmkgl9qp7aidny3dig8a3d8m3mjskn1j',
        'NarHash: sha256-nJDvX3ebV2sIOl2bP1iA7ZUCmJfS45NSXiCY3SPLN2o=',
      ),
    );
    assert.match(
      fingerprintNarInfo(info),
      /^1;[^;]+;sha256:[0-9a-z]{52};120;\/nix\/store\/c5rkdk5wafp7h9clw0nwp6nwrxppgyyc-x,\/nix\/store\/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep$/,
    );
  });

  test('takes the store dir of the StorePath, or the one given', () => {
    const info = parseNarInfo(UNSIGNED_X.replace('/nix/store/', '/tmp/s/'), { storeDir: '/tmp/s' });
    assert.match(fingerprintNarInfo(info), /;\/tmp\/s\/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep$/);
    assert.match(fingerprintNarInfo(info, '/x'), /;\/x\/i24q8rn139iy6nmkg32ly2ray50cvdc4-dep$/);
  });

  test('refuses NarSize 0', () => {
    const info = { ...parseNarInfo(UNSIGNED_X), narSize: 0 };
    assert.throws(() => fingerprintNarInfo(info), { code: 'FIRN_E_NARINFO_INVALID' });
  });
});

describe('parseSecretKey and parsePublicKey', () => {
  test('accept trailing whitespace and unpadded base64', () => {
    assert.equal(parseSecretKey(`${NIX_SECRET}\n`).name, 'test-1');
    assert.equal(parseSecretKey(`${NIX_SECRET} \r\n\t`).name, 'test-1');
    assert.equal(parsePublicKey(`${NIX_PUBLIC}\n`).name, 'test-1');
    assert.equal(parsePublicKey(NIX_PUBLIC.replace(/=+$/, '')).name, 'test-1');
  });

  test('refuse malformed secret keys without ever quoting them', () => {
    const b64 = NIX_SECRET.slice('test-1:'.length);
    const bytes = Buffer.from(b64, 'base64');
    const otherPublicHalf = Buffer.concat([bytes.subarray(0, 32), Buffer.alloc(32, 9)]).toString(
      'base64',
    );
    const cases: [string, RegExp][] = [
      [b64, /no ":"/],
      [`:${b64}`, /name is empty/],
      [`a b:${b64}`, /whitespace/],
      ['test-1:', /not base64 of 64 bytes/],
      [`test-1:${b64.slice(4)}`, /not base64 of 64 bytes/],
      [`test-1:${b64}AAAA`, /not base64 of 64 bytes/],
      [`test-1:${b64.slice(0, 10)}*${b64.slice(11)}`, /not base64/],
      [`test-1:${b64.slice(0, 40)}\n${b64.slice(40)}`, /not base64/],
      [`test-1:${otherPublicHalf}`, /public half does not match its seed/],
      [NIX_PUBLIC, /not base64 of 64 bytes/],
    ];
    for (const [text, pattern] of cases) {
      const error = keyError(() => parseSecretKey(text), pattern);
      assertNoSecretIn(`${error.message} ${error.hint ?? ''}`, NIX_SECRET);
    }
  });

  test('refuse malformed public keys', () => {
    keyError(() => parsePublicKey('nocolon'), /no ":"/);
    keyError(() => parsePublicKey(NIX_SECRET), /not base64 of 32 bytes/);
    keyError(() => parsePublicKey('x:AAAA'), /not base64 of 32 bytes/);
  });

  test('key names: not empty, no ":", no whitespace or control characters', () => {
    assert.equal(keyNameProblem('cache.example.org-1'), undefined);
    assert.match(keyNameProblem('') ?? '', /empty/);
    assert.match(keyNameProblem('a:b') ?? '', /":"/);
    assert.match(keyNameProblem('a\nb') ?? '', /whitespace/);
    assert.match(keyNameProblem('a\0b') ?? '', /control/);
  });
});

describe('generateSecretKey', () => {
  test('makes a key that formats, parses back and signs verifiably', () => {
    const key = generateSecretKey('cache-1');
    const text = formatSecretKey(key);
    assert.match(text, /^cache-1:[A-Za-z0-9+/]{86}==$/);
    assert.deepEqual(parseSecretKey(text), key);
    const info = withSignature(parseNarInfo(UNSIGNED_X), key);
    assert.equal(verifyNarInfo(info, [publicKeyOf(key)])?.name, 'cache-1');
  });

  test('makes a different key each time', () => {
    assert.notDeepEqual(generateSecretKey('a').seed, generateSecretKey('a').seed);
  });

  test('refuses bad names', () => {
    for (const name of ['', 'a:b', 'a b', 'a\n']) {
      keyError(() => generateSecretKey(name), /cannot name a key/);
    }
  });
});

describe('withSignature and verifyNarInfo', () => {
  const nixKey = parseSecretKey(NIX_SECRET);
  const other = generateSecretKey('other-1');
  const sameNameImpostor = generateSecretKey('test-1');
  const unsigned = parseNarInfo(UNSIGNED_X);

  test('withSignature replaces the signature by the same key name and keeps others, sorted', () => {
    const first = withSignature(unsigned, sameNameImpostor);
    const both = withSignature(withSignature(first, other), nixKey);
    assert.deepEqual(both.sigs, [signNarInfo(unsigned, other), NIX_SIG_X]);
    assert.deepEqual(withSignature(both, nixKey).sigs, both.sigs);
    assert.deepEqual(unsigned.sigs, [], 'the input is not changed');
  });

  test('verifyNarInfo returns the first trusted key with a valid signature', () => {
    const signed = withSignature(withSignature(unsigned, other), nixKey);
    const nixPub = publicKeyOf(nixKey);
    const otherPub = publicKeyOf(other);
    assert.equal(verifyNarInfo(signed, [nixPub, otherPub]), nixPub);
    assert.equal(verifyNarInfo(signed, [otherPub, nixPub]), otherPub);
    assert.equal(verifyNarInfo(signed, []), undefined);
    assert.equal(verifyNarInfo(unsigned, [nixPub]), undefined);
  });

  test('a key of the same name but other bytes does not verify', () => {
    const signed = withSignature(unsigned, nixKey);
    assert.equal(verifyNarInfo(signed, [publicKeyOf(sameNameImpostor)]), undefined);
    // … but is still tried when a trusted key of that name follows it.
    assert.equal(
      verifyNarInfo(signed, [publicKeyOf(sameNameImpostor), publicKeyOf(nixKey)])?.key,
      nixKey.publicKey,
    );
  });

  test('the signature covers path, NarHash, NarSize and references only', () => {
    const signed = withSignature(unsigned, nixKey);
    const trusted = [publicKeyOf(nixKey)];
    const changes: [Partial<NarInfo>, boolean][] = [
      [{ url: 'nar/other.nar' }, true],
      [{ compression: 'zstd' }, true],
      [{ deriver: 'g04wx39dcx9isz8nn728z6mhlakpfr1r-dep.drv' }, true],
      [{ narSize: 169 }, false],
      [{ narHash: parseNarInfo(UNSIGNED_DEP).narHash }, false],
      [{ references: [] }, false],
      [{ storePath: '/nix/store/d5rkdk5wafp7h9clw0nwp6nwrxppgyyc-x' }, false],
    ];
    for (const [change, stillValid] of changes) {
      assert.equal(
        verifyNarInfo({ ...signed, ...change }, trusted) !== undefined,
        stillValid,
        JSON.stringify(change),
      );
    }
  });

  test('malformed signatures are skipped, not thrown', () => {
    const info = {
      ...unsigned,
      sigs: ['test-1:AAAA', 'test-1', ':x', NIX_SIG_X.replace('Ek1Q', 'Ek1R')],
    };
    assert.equal(verifyNarInfo(info, [publicKeyOf(nixKey)]), undefined);
  });

  test('signatureProblem', () => {
    assert.equal(signatureProblem(NIX_SIG_X), undefined);
    assert.match(signatureProblem('x') ?? '', /no ":"/);
    assert.match(signatureProblem('a:AAAA') ?? '', /64 bytes/);
  });

  test('property: any key signs any narinfo verifiably, and only under its own public key', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.integer({ min: 1, max: 1e12 }),
        (seed, narSize) => {
          const key = generateSecretKey('k');
          const info = withSignature({ ...unsigned, narSize }, key);
          assert.equal(verifyNarInfo(info, [publicKeyOf(key)])?.name, 'k');
          assert.equal(verifyNarInfo(info, [{ name: 'k', key: Buffer.from(seed) }]), undefined);
        },
      ),
      { numRuns: 50 },
    );
  });
});

describe('key files', () => {
  test('writeSecretKeyFile writes mode 0600 without a trailing newline, and refuses to overwrite', async (t) => {
    const dir = tempDir(t);
    const key = generateSecretKey('file-1');
    const path = join(dir, 'sk');
    await writeSecretKeyFile(path, key);
    assert.equal(readFileSync(path, 'utf8'), formatSecretKey(key));
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(await readSecretKeyFile(path), key);
    await assert.rejects(writeSecretKeyFile(path, generateSecretKey('file-2')), {
      code: 'FIRN_E_FILE_EXISTS',
    });
    assert.equal(readFileSync(path, 'utf8'), formatSecretKey(key), 'the old key is untouched');
  });

  test('public key files round-trip', async (t) => {
    const dir = tempDir(t);
    const pub = publicKeyOf(generateSecretKey('file-1'));
    await writePublicKeyFile(join(dir, 'pk'), pub);
    assert.deepEqual(await readPublicKeyFile(join(dir, 'pk')), pub);
  });

  test('reading a file Nix wrote (with or without a newline)', async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'sk'), `${NIX_SECRET}\n`);
    assert.equal((await readSecretKeyFile(join(dir, 'sk'))).name, 'test-1');
  });

  test('errors name the file and never show the key', async (t) => {
    const dir = tempDir(t);
    await assert.rejects(readSecretKeyFile(join(dir, 'missing')), {
      code: 'FIRN_E_FILE_NOT_FOUND',
    });
    const damaged = NIX_SECRET.slice(0, -6);
    writeFileSync(join(dir, 'bad'), damaged);
    await assert.rejects(readSecretKeyFile(join(dir, 'bad')), (error: unknown) => {
      assert.ok(FirnError.is(error) && error.code === 'FIRN_E_KEY_INVALID');
      assert.ok(error.message.startsWith(`${join(dir, 'bad')}: `), error.message);
      assertNoSecretIn(`${error.message} ${error.hint ?? ''}`, NIX_SECRET);
      return true;
    });
    writeFileSync(join(dir, 'big'), 'x'.repeat(70_000));
    await assert.rejects(readSecretKeyFile(join(dir, 'big')), {
      code: 'FIRN_E_KEY_INVALID',
      message: /too large/,
    });
    await assert.rejects(readSecretKeyFile(dir), { code: 'FIRN_E_IO' });
  });
});

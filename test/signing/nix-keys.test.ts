/**
 * firn's keys and signatures against the real Nix 2.8: keys cross over in both directions,
 * signatures are byte-identical, and a file:// cache whose narinfos firn signed is accepted by
 * `nix copy` exactly when firn's public key is trusted.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseNarInfo, serializeNarInfo } from '../../src/nix/narinfo.ts';
import {
  formatPublicKey,
  publicKeyOf,
  readSecretKeyFile,
  signNarInfo,
} from '../../src/nix/signing.ts';
import type { RunResult } from '../../src/process/run.ts';
import { firn } from '../helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';

// A chroot store builds in a chroot: give /bin/sh and its libraries to the builder.
const SANDBOX_PATHS = ['/bin', '/usr', '/lib', '/lib64'].filter((path) => existsSync(path));

let nix: NixEnv;
let store: string;
/** The built path `x` and its dependency `dep` (x refers to dep), both input-addressed. */
let outPath: string;
let closure: string[];
/** A file:// cache made by `nix copy` without a secret key: no Sig lines. */
let unsignedCache: string;

function narinfoFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.narinfo'))
    .sort();
}

function copyCache(name: string): string {
  const dir = join(nix.dir, name);
  cpSync(unsignedCache, dir, { recursive: true });
  return dir;
}

async function nixKeyPair(name: string): Promise<{ secret: string; public: string }> {
  const secret = join(nix.dir, `${name}.nix.sec`);
  const pub = join(nix.dir, `${name}.nix.pub`);
  await nix.nix('nix-store', ['--generate-binary-cache-key', name, secret, pub]);
  return { secret, public: pub };
}

async function firnKeyPair(name: string): Promise<{ secret: string; public: string }> {
  const secret = join(nix.dir, `${name}.firn.sec`);
  const pub = join(nix.dir, `${name}.firn.pub`);
  const result = await firn(['key', 'generate', name, '--secret-out', secret, '--public-out', pub]);
  assert.equal(result.code, 0, result.stderr);
  return { secret, public: pub };
}

/** Signs every narinfo of `cache` in place with `firn narinfo sign`. */
async function firnSignCache(cache: string, secretKeyFile: string): Promise<void> {
  for (const file of narinfoFiles(cache)) {
    const path = join(cache, file);
    const result = await firn(['narinfo', 'sign', '--key', secretKeyFile], {
      input: readFileSync(path),
    });
    assert.equal(result.code, 0, result.stderr);
    writeFileSync(path, result.stdout);
  }
}

/** `nix copy` of the closure from a file:// cache into a fresh chroot store, trusting only `trustedKey`. */
async function copyFromCache(
  cache: string,
  trustedKey: string,
): Promise<RunResult & { fresh: string }> {
  const fresh = join(nix.dir, `fresh-${randomUUID()}`);
  const result = await nix.nixRaw('nix', [
    'copy',
    '--from',
    `file://${cache}`,
    '--to',
    fresh,
    '--option',
    'trusted-public-keys',
    trustedKey,
    outPath,
  ]);
  return { ...result, fresh };
}

before(async () => {
  nix = makeNixEnv(`extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}`);
  store = join(nix.dir, 'store');
  const expr = join(nix.dir, 'x.nix');
  const salt = randomUUID();
  writeFileSync(
    expr,
    `let dep = derivation { name = "dep"; system = builtins.currentSystem; builder = "/bin/sh";
                          args = ["-c" "echo dep ${salt} > $out"]; };
     in derivation { name = "x"; system = builtins.currentSystem; builder = "/bin/sh";
                     args = ["-c" "echo \${dep} ${salt} > $out"]; }\n`,
  );
  const built = await nix.nix('nix-build', ['--store', store, '--no-out-link', expr]);
  outPath = built.stdout.toString().trim();
  const paths = await nix.nix('nix', ['path-info', '--store', store, '--recursive', outPath]);
  closure = paths.stdout.toString().trim().split('\n').sort();
  assert.equal(closure.length, 2, `closure of ${outPath}: ${closure.join(' ')}`);
  unsignedCache = join(nix.dir, 'cache-unsigned');
  await nix.nix('nix', ['copy', '--store', store, '--to', `file://${unsignedCache}`, outPath]);
});

after(() => {
  nix[Symbol.dispose]();
});

describe('the unsigned cache Nix wrote', () => {
  test('has one narinfo per path, without signatures, and firn writes each back byte for byte', () => {
    const files = narinfoFiles(unsignedCache);
    assert.equal(files.length, 2);
    for (const file of files) {
      const text = readFileSync(join(unsignedCache, file), 'utf8');
      assert.doesNotMatch(text, /^Sig: /m);
      const info = parseNarInfo(text);
      assert.ok(closure.includes(info.storePath));
      assert.equal(serializeNarInfo(info), text);
    }
  });
});

describe('keys made by Nix work in firn', () => {
  test('firn reads the secret key and derives the public key Nix wrote', async () => {
    const keys = await nixKeyPair('nix-made-1');
    const key = await readSecretKeyFile(keys.secret);
    assert.equal(formatPublicKey(publicKeyOf(key)), readFileSync(keys.public, 'utf8'));
    const result = await firn(['key', 'public', keys.secret]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.toString(), `${readFileSync(keys.public, 'utf8')}\n`);
  });

  test("firn's signed narinfos equal what `nix store sign` writes, byte for byte", async () => {
    const keys = await nixKeyPair('nix-made-2');
    const byNix = copyCache('cache-nix-signed');
    await nix.nix('nix', [
      'store',
      'sign',
      '--store',
      `file://${byNix}`,
      '--key-file',
      keys.secret,
      '--all',
    ]);
    const byFirn = copyCache('cache-firn-signed-nix-key');
    await firnSignCache(byFirn, keys.secret);
    for (const file of narinfoFiles(byNix)) {
      const nixText = readFileSync(join(byNix, file), 'utf8');
      assert.match(nixText, /^Sig: nix-made-2:/m);
      assert.equal(readFileSync(join(byFirn, file), 'utf8'), nixText);
    }
  });
});

describe('keys made by firn work in Nix', () => {
  test('`nix store sign` with a firn secret key makes the signature firn makes', async () => {
    const keys = await firnKeyPair('firn-made-1');
    const byNix = copyCache('cache-nix-signed-firn-key');
    await nix.nix('nix', [
      'store',
      'sign',
      '--store',
      `file://${byNix}`,
      '--key-file',
      keys.secret,
      '--all',
    ]);
    const key = await readSecretKeyFile(keys.secret);
    for (const file of narinfoFiles(byNix)) {
      const signed = parseNarInfo(readFileSync(join(byNix, file), 'utf8'));
      assert.deepEqual(signed.sigs, [signNarInfo(signed, key)]);
    }
  });

  test('`nix key convert-secret-to-public` agrees with the public key firn wrote', async () => {
    const keys = await firnKeyPair('firn-made-2');
    const result = await nix.nix(
      'nix',
      ['key', 'convert-secret-to-public'],
      readFileSync(keys.secret),
    );
    assert.equal(result.stdout.toString(), readFileSync(keys.public, 'utf8'));
  });
});

describe('a file:// cache re-signed by firn', () => {
  let keys: { secret: string; public: string };
  let other: { secret: string; public: string };
  let cache: string;

  before(async () => {
    keys = await firnKeyPair('firn-cache-1');
    other = await nixKeyPair('other-1');
    cache = copyCache('cache-firn-signed');
    await firnSignCache(cache, keys.secret);
  });

  test('is refused by `nix copy` trusting another key', async () => {
    const result = await copyFromCache(cache, readFileSync(other.public, 'utf8'));
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /lacks a valid signature/);
  });

  test('is refused by `nix copy` trusting a key of the same name but other bytes', async () => {
    const impostor = await nixKeyPair('firn-cache-1');
    const result = await copyFromCache(cache, readFileSync(impostor.public, 'utf8'));
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /lacks a valid signature/);
  });

  test("is accepted by `nix copy` trusting firn's public key, whole closure", async () => {
    const { fresh, ...result } = await copyFromCache(cache, readFileSync(keys.public, 'utf8'));
    assert.equal(result.code, 0, result.stderr);
    const copied = await nix.nix('nix', ['path-info', '--store', fresh, '--recursive', outPath]);
    assert.deepEqual(copied.stdout.toString().trim().split('\n').sort(), closure);
    const sigs = await nix.nix('nix', ['path-info', '--store', fresh, '--sigs', outPath]);
    assert.match(sigs.stdout.toString(), /firn-cache-1:/);
  });

  test('`firn narinfo verify` accepts it under the right key (file or text) and refuses otherwise', async () => {
    const publicText = readFileSync(keys.public, 'utf8');
    for (const file of narinfoFiles(cache)) {
      const input = readFileSync(join(cache, file));
      for (const trusted of [keys.public, publicText]) {
        const ok = await firn(['narinfo', 'verify', '--trusted-key', trusted], { input });
        assert.equal(ok.code, 0, ok.stderr);
        assert.equal(ok.stdout.toString(), 'firn-cache-1\n');
      }
      const both = await firn(
        ['narinfo', 'verify', '--trusted-key', other.public, '--trusted-key', keys.public],
        { input },
      );
      assert.equal(both.code, 0, both.stderr);

      const refused = await firn(['narinfo', 'verify', '--trusted-key', other.public], { input });
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /lacks a valid signature.*\[FIRN_E_SIGNATURE_INVALID\]/);

      const unsigned = await firn(['narinfo', 'verify', '--trusted-key', keys.public], {
        input: readFileSync(join(unsignedCache, file)),
      });
      assert.equal(unsigned.code, 1);
      assert.match(unsigned.stderr, /it has no signatures/);

      const tampered = await firn(['narinfo', 'verify', '--trusted-key', keys.public], {
        input: input
          .toString()
          .replace(/^NarSize: (\d+)$/m, (_, n: string) => `NarSize: ${Number(n) + 1}`),
      });
      assert.equal(tampered.code, 1);
      assert.match(tampered.stderr, /does not verify/);
    }
  });

  test('Nix signatures and firn signatures coexist: re-signing keeps the other key', async () => {
    const both = copyCache('cache-both-signed');
    await nix.nix('nix', [
      'store',
      'sign',
      '--store',
      `file://${both}`,
      '--key-file',
      other.secret,
      '--all',
    ]);
    await firnSignCache(both, keys.secret);
    await firnSignCache(both, keys.secret); // twice: the firn signature is replaced, not doubled
    for (const file of narinfoFiles(both)) {
      const info = parseNarInfo(readFileSync(join(both, file), 'utf8'));
      assert.deepEqual(
        info.sigs.map((sig) => sig.slice(0, sig.indexOf(':'))),
        ['firn-cache-1', 'other-1'],
      );
    }
    const result = await copyFromCache(both, readFileSync(other.public, 'utf8'));
    assert.equal(result.code, 0, result.stderr);
  });
});

describe('firn key and firn narinfo on bad input', () => {
  test('firn key generate refuses to overwrite either file and leaves no half pair', async () => {
    const keys = await firnKeyPair('firn-overwrite-1');
    const before = readFileSync(keys.secret, 'utf8');
    const again = await firn([
      'key',
      'generate',
      'x',
      '--secret-out',
      keys.secret,
      '--public-out',
      join(nix.dir, 'new.pub'),
    ]);
    assert.equal(again.code, 73);
    assert.match(again.stderr, /already exists \[FIRN_E_FILE_EXISTS\]/);
    assert.equal(readFileSync(keys.secret, 'utf8'), before);
    assert.equal(existsSync(join(nix.dir, 'new.pub')), false);

    const newSecret = join(nix.dir, 'new.sec');
    const clash = await firn([
      'key',
      'generate',
      'x',
      '--secret-out',
      newSecret,
      '--public-out',
      keys.public,
    ]);
    assert.equal(clash.code, 73);
    assert.equal(
      existsSync(newSecret),
      false,
      'the secret key written before the clash is removed',
    );
  });

  test('firn narinfo sign reports the line of a malformed narinfo and never prints the key', async () => {
    const keys = await firnKeyPair('firn-bad-input-1');
    const result = await firn(['narinfo', 'sign', '--key', keys.secret], {
      input: 'StorePath: /nix/store/nothash-x\nURL: nar/x\n',
    });
    assert.equal(result.code, 65);
    assert.match(result.stderr, /standard input: line 1: StorePath .*\[FIRN_E_NARINFO_INVALID\]/);
    const secretB64 = readFileSync(keys.secret, 'utf8').split(':')[1] ?? '';
    assert.ok(!result.stderr.includes(secretB64.slice(0, 12)));
    const big = await firn(['narinfo', 'sign', '--key', keys.secret], {
      input: Buffer.alloc(2 * 1024 * 1024, 0x41),
    });
    assert.equal(big.code, 65);
    assert.match(big.stderr, /\[FIRN_E_INPUT_TOO_LARGE\]/);
  });

  test('firn narinfo verify with a --trusted-key that is neither key nor file', async () => {
    const result = await firn(
      ['narinfo', 'verify', '--trusted-key', join(nix.dir, 'missing.pub')],
      {
        input: readFileSync(join(unsignedCache, narinfoFiles(unsignedCache)[0] ?? '')),
      },
    );
    assert.equal(result.code, 66);
    assert.match(result.stderr, /neither a public key nor an existing file/);
  });
});

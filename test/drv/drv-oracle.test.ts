/**
 * firn's .drv parser and `firn drv show` against the real Nix 2.8: derivations instantiated by
 * `nix-instantiate` (into the real /nix/store, which is fine for .drv files) are read back,
 * written again byte for byte, and shown exactly as `nix show-derivation` shows them.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  derivationToJson,
  parseDerivation,
  serializeDerivation,
  type Derivation,
} from '../../src/nix/derivation.ts';
import { firn } from '../helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';

const BASE = `base = { system = "x86_64-linux"; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; };`;

/** Each file evaluates to an attribute set of derivations; every attribute is instantiated. */
const EXPRESSIONS: Record<string, string> = {
  'escapes.nix': `
    let
      ${BASE}
      controls = builtins.fromJSON "\\"\\\\u0001 \\\\u0008 \\\\u000c \\\\u001f \\\\u007f\\"";
    in {
      escapes = derivation (base // {
        name = "escapes";
        args = [ "-c" "echo \\"quoted\\" \\\\back\\\\slash\\n\\ttab > $out" "" "é ☃ 😀" ];
        quotes = "a \\"quoted\\" word";
        backslashes = "one \\\\ two \\\\\\\\ end\\\\";
        newlines = "line 1\\nline 2\\r\\nline 3\\n";
        tabs = "\\tcol\\tcol\\t";
        unicode = "é ☃ 😀 \u{FFFD} 中文";
        inherit controls;
        empty = "";
        "10" = "ten";
        "2" = "two";
        "__proto__" = "proto";
        "with space" = "key with a space";
      });
      weird-system = derivation (base // {
        name = "weird-system";
        system = "x86\\t64-li\\nnux";
        args = [ "-c" "echo > $out" ];
      });
      no-args = derivation (base // { name = "no-args"; });
    }`,
  'outputs.nix': `
    let
      ${BASE}
      lib = derivation (base // {
        name = "lib";
        outputs = [ "out" "dev" "bin" "lib" ];
        args = [ "-c" "echo > $out; echo > $dev; echo > $bin; echo > $lib" ];
      });
      notes = builtins.toFile "notes.txt" "some \\"text\\"\\nwith lines\\n";
      script = builtins.toFile "build.sh" "cat \${notes} > $out\\n";
    in {
      inherit lib;
      user = derivation (base // {
        name = "user";
        args = [ "-c" "cat \${lib.dev} \${lib.bin} > $out" ];
        inherit script;
        src = builtins.toFile "in.txt" "x";
      });
      user-of-user = derivation (base // {
        name = "user-of-user";
        outputs = [ "out" "doc" ];
        args = [ "-c" "cat \${lib.dev} > $out; echo > $doc" ];
        dep = (derivation (base // { name = "inner"; args = [ "-c" "echo > $out" ]; }));
        lib = lib.lib;
      });
    }`,
  'fixed.nix': `
    let ${BASE} in {
      recursive = derivation (base // {
        name = "fixed-recursive";
        args = [ "-c" "mkdir $out" ];
        outputHashMode = "recursive";
        outputHashAlgo = "sha256";
        outputHash = "1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i";
      });
      flat-sha1 = derivation (base // {
        name = "fixed-flat-sha1";
        args = [ "-c" "printf '' > $out" ];
        outputHashAlgo = "sha1";
        outputHash = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
      });
      flat-sri = derivation (base // {
        name = "fixed-flat-sri";
        args = [ "-c" "printf '' > $out" ];
        outputHash = "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
      });
      flat-md5 = derivation (base // {
        name = "fixed-flat-md5";
        args = [ "-c" "printf '' > $out" ];
        outputHashMode = "flat";
        outputHashAlgo = "md5";
        outputHash = "d41d8cd98f00b204e9800998ecf8427e";
      });
    }`,
  'content-addressed.nix': `
    let
      ${BASE}
      floating = derivation (base // {
        name = "floating";
        args = [ "-c" "echo > $out" ];
        __contentAddressed = true;
        outputHashMode = "recursive";
        outputHashAlgo = "sha256";
      });
    in {
      inherit floating;
      deferred = derivation (base // { name = "deferred"; args = [ "-c" "cat \${floating} > $out" ]; });
      impure = derivation (base // { name = "impure"; args = [ "-c" "echo > $out" ]; __impure = true; });
    }`,
};

let nix: NixEnv;
/** Every instantiated drv path, and every input derivation they reach. */
let drvPaths: string[];

async function instantiate(file: string): Promise<string[]> {
  const path = join(nix.dir, file);
  writeFileSync(path, EXPRESSIONS[file] ?? '');
  const attrs = await nix.nix('nix-instantiate', [
    '--eval',
    '--json',
    '-E',
    `builtins.attrNames (import ${path})`,
  ]);
  const names = JSON.parse(attrs.stdout.toString()) as string[];
  const result = await nix.nix('nix-instantiate', [path, ...names.flatMap((name) => ['-A', name])]);
  return result.stdout.toString().trim().split('\n');
}

function closureOf(roots: readonly string[]): string[] {
  const seen = new Set<string>();
  const visit = (path: string): void => {
    if (seen.has(path)) return;
    seen.add(path);
    for (const input of parseDerivation(readFileSync(path)).inputDrvs.keys()) visit(input);
  };
  roots.forEach(visit);
  return [...seen].sort();
}

async function nixShow(paths: readonly string[]): Promise<string> {
  return (await nix.nix('nix', ['show-derivation', ...paths])).stdout.toString();
}

async function firnShow(paths: readonly string[]): Promise<string> {
  const result = await firn(['drv', 'show', ...paths]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.toString();
}

before(async () => {
  nix = makeNixEnv('experimental-features = nix-command ca-derivations impure-derivations');
  const roots: string[] = [];
  for (const file of Object.keys(EXPRESSIONS)) roots.push(...(await instantiate(file)));
  assert.equal(roots.length, 13);
  drvPaths = closureOf(roots);
});

after(() => {
  nix[Symbol.dispose]();
});

test('every instantiated .drv round trips byte for byte', () => {
  assert.ok(drvPaths.length >= 14, `only ${drvPaths.length} derivations`);
  for (const path of drvPaths) {
    const bytes = readFileSync(path);
    const drv = parseDerivation(bytes);
    assert.ok(Buffer.from(serializeDerivation(drv), 'utf8').equals(bytes), path);
  }
});

test('the fixtures cover what they should', () => {
  const drvs = new Map<string, Derivation>(
    drvPaths.map((p) => [p, parseDerivation(readFileSync(p))]),
  );
  const byName = (name: string): Derivation => {
    const found = [...drvs].find(([path]) => path.endsWith(`-${name}.drv`));
    assert.ok(found, name);
    return found[1];
  };
  const escapes = byName('escapes');
  assert.equal(escapes.env.get('controls'), '\u0001 \b \f \u001f \u007f');
  assert.equal(escapes.env.get('newlines'), 'line 1\nline 2\r\nline 3\n');
  assert.equal(escapes.env.get('backslashes'), 'one \\ two \\\\ end\\');
  assert.equal(escapes.env.get('__proto__'), 'proto');
  assert.equal(byName('weird-system').system, 'x86\t64-li\nnux');
  assert.deepEqual([...byName('user').inputDrvs.values()], [['bin', 'dev']]);
  assert.equal(byName('user').inputSrcs.length, 2);
  assert.equal(byName('user-of-user').inputDrvs.size, 2);
  assert.deepEqual([...byName('lib').outputs.keys()], ['bin', 'dev', 'lib', 'out']);
  assert.equal(byName('fixed-recursive').outputs.get('out')?.hashAlgo, 'r:sha256');
  assert.equal(byName('fixed-flat-sri').outputs.get('out')?.hashAlgo, 'sha512');
  assert.equal(
    byName('fixed-flat-md5').outputs.get('out')?.hash,
    'd41d8cd98f00b204e9800998ecf8427e',
  );
  assert.equal(byName('floating').outputs.get('out')?.path, '');
  assert.equal(byName('impure').outputs.get('out')?.hash, 'impure');
});

test('firn drv show prints exactly what nix show-derivation prints, one derivation at a time', async () => {
  for (const path of drvPaths) {
    const expected = await nixShow([path]);
    const actual = await firnShow([path]);
    assert.deepEqual(JSON.parse(actual), JSON.parse(expected), path);
    assert.equal(actual, expected, path);
    const drv = parseDerivation(readFileSync(path));
    assert.deepEqual(derivationToJson(path, drv), JSON.parse(expected));
  }
});

test('several paths at once: sorted, deduplicated, like nix show-derivation', async () => {
  const some = [...drvPaths].reverse().slice(0, 6);
  const args = [...some, some[0] ?? ''];
  assert.equal(await firnShow(args), await nixShow(args));
});

test('a symlink to a derivation is shown under the store path it points to', async () => {
  const target = drvPaths[0] ?? '';
  const link = join(nix.dir, 'result.drv');
  symlinkSync(target, link);
  const shown = JSON.parse(await firnShow([link])) as Record<string, unknown>;
  assert.deepEqual(Object.keys(shown), [target]);
  assert.equal(await firnShow([link]), await nixShow([link]));
});

test('missing files and non-derivations are reported with their codes', async () => {
  const missing = await firn(['drv', 'show', join(nix.dir, 'nope.drv')]);
  assert.equal(missing.code, 66);
  assert.match(missing.stderr, /FIRN_E_FILE_NOT_FOUND/);
  const notDrv = join(nix.dir, 'not.drv');
  writeFileSync(notDrv, readFileSync(drvPaths[0] ?? '', 'utf8') + '\n');
  const bad = await firn(['drv', 'show', notDrv]);
  assert.equal(bad.code, 65);
  assert.match(
    bad.stderr,
    /not\.drv: invalid derivation at byte \d+: unexpected data after the derivation \[FIRN_E_DRV_INVALID\]/,
  );
  const usage = await firn(['drv', 'show']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /FIRN_E_USAGE/);
});

test('every other .drv already in /nix/store round trips byte for byte (up to 2000)', () => {
  const names = readdirSync('/nix/store')
    .filter((name) => name.endsWith('.drv'))
    .sort()
    .slice(0, 2000);
  for (const name of names) {
    const bytes = readFileSync(join('/nix/store', name));
    assert.ok(Buffer.from(serializeDerivation(parseDerivation(bytes))).equals(bytes), name);
  }
});

/**
 * `firn build` with flake installables, on a one-board test fleet: one evaluation by the real
 * nix (flakes enabled per command), outputs printed in the order asked for, every output in
 * the cache; a bad attribute is FIRN_E_BUILD_EVAL with nix's own words and nothing built.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { firn } from '../helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';
import { startBuildFleet, type BuildFleet } from './build-fleet.ts';

/** A flake without inputs (no registry, no network): kernel → system, and a tool beside them. */
function flakeNix(salt: string): string {
  return `{
  outputs = { self }: let
    mk = name: extra: derivation ({
      inherit name; salt = "${salt}"; system = "aarch64-linux"; builder = "/bin/sh";
      args = [ "-c" "echo $name $salt > $out" ]; PATH = "/bin:/usr/bin";
    } // extra);
    kernel = mk "flake-kernel" {};
  in {
    packages.aarch64-linux = {
      inherit kernel;
      system = mk "flake-system" { inherit kernel; };
      tool = mk "flake-tool" {};
    };
  };
}
`;
}

describe('firn build with flake installables', () => {
  let setup: BuildFleet;
  let nix: NixEnv;
  let work: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'firn-flake-test-'));
    nix = makeNixEnv();
    setup = await startBuildFleet({ boards: ['opi01'], maxJobs: 2, work });
  });
  after(async () => {
    await setup[Symbol.asyncDispose]();
    nix[Symbol.dispose]();
    rmSync(work, { recursive: true, force: true });
  });

  const flake = (salt: string): string => {
    const dir = join(work, salt);
    mkdirSync(dir);
    writeFileSync(join(dir, 'flake.nix'), flakeNix(salt));
    return `path:${dir}`;
  };
  const build = (args: readonly string[]) =>
    firn(
      [
        'build',
        '--fleet',
        setup.inventory,
        '--store',
        join(work, 'store'),
        '--history',
        join(work, 'durations.sqlite'),
        ...args,
      ],
      { env: nix.env },
    );

  test('installables are evaluated once, built on the board, printed in the order asked', async () => {
    const salt = randomUUID();
    const ref = flake(salt);
    const result = await build([
      `${ref}#packages.aarch64-linux.tool`,
      `${ref}#packages.aarch64-linux.system`,
    ]);
    assert.equal(result.code, 0, result.stderr);
    const outputs = result.stdout.toString('utf8').trim().split('\n');
    assert.equal(outputs.length, 2, result.stdout.toString('utf8'));
    assert.match(outputs[0] ?? '', /-flake-tool$/);
    assert.match(outputs[1] ?? '', /-flake-system$/);
    assert.match(result.stderr, /built 3 \(opi01 3\), 0 already in the cache/);
    for (const output of outputs) {
      const hash = output.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      const response = await fetch(`${setup.server.url}/${hash}.narinfo`);
      assert.equal(response.status, 200, `${output} is in the cache`);
    }
  });

  test('an attribute the flake does not have: FIRN_E_BUILD_EVAL, nothing built', async () => {
    const ref = flake(randomUUID());
    const result = await build([`${ref}#packages.aarch64-linux.nope`]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /FIRN_E_BUILD_EVAL/);
    assert.match(result.stderr, /does not provide attribute/);
    assert.doesNotMatch(result.stderr, /built \d/);
    assert.equal(result.stdout.toString('utf8'), '');
  });

  test('an attribute set is not a derivation: a clear error', async () => {
    const ref = flake(randomUUID());
    const result = await build([`${ref}#packages.aarch64-linux`]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /FIRN_E_BUILD_EVAL/);
    assert.match(result.stderr, /not a derivation/);
  });

  test('installables beside -f FILE, or a built store path: usage errors', async () => {
    const withFile = await build(['-f', join(work, 'x.nix'), '.#tool']);
    assert.equal(withFile.code, 2, withFile.stderr);
    assert.match(withFile.stderr, /name attributes with -A/);
    const output = await build(['/nix/store/lnzrcdkn9g3lw2xx0jwdaqia6d3xq6sa-hello-flake']);
    assert.equal(output.code, 2, output.stderr);
    assert.match(output.stderr, /not a derivation/);
  });
});

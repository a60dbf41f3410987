import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FirnError } from '../errors.ts';
import { isDrvPath, parseDryRun } from './installables.ts';

const DRV = '/nix/store/yrxyf7c5dxw7jvs9cgnjg68qvsqyk4vi-hello-flake.drv';
const OUT = '/nix/store/lnzrcdkn9g3lw2xx0jwdaqia6d3xq6sa-hello-flake';

test('drv paths are told apart from flake installables', () => {
  assert.equal(isDrvPath(DRV), true);
  for (const word of [
    OUT,
    '.#default',
    `${DRV}#x`,
    'path:/src#pkg',
    'github:o/r',
    '',
    '/tmp/x.drv',
  ]) {
    assert.equal(isDrvPath(word), false, word);
  }
});

test("nix build --dry-run --json gives drv paths in the installables' order", () => {
  const other = DRV.replace('hello', 'other');
  const stdout = JSON.stringify([
    { drvPath: other, outputs: { out: OUT } },
    { drvPath: DRV, outputs: { out: OUT } },
  ]);
  assert.deepEqual(parseDryRun(stdout, ['.#other', '.#default']), [other, DRV]);
});

test('output that is not a list of derivations is FIRN_E_BUILD_EVAL', () => {
  for (const stdout of [
    '',
    'these 2 derivations will be built',
    '{"drvPath":"x"}',
    '[{"path":"/nix/store/lnzrcdkn9g3lw2xx0jwdaqia6d3xq6sa-hello-flake"}]',
    `[{"drvPath":"${OUT}"}]`,
    '[null]',
    `[{"drvPath":"${DRV}/../../etc/passwd.drv"}]`,
  ]) {
    assert.throws(
      () => parseDryRun(stdout, ['.#x']),
      (error: unknown) => error instanceof FirnError && error.code === 'FIRN_E_BUILD_EVAL',
      stdout,
    );
  }
});

/**
 * The graph reader on derivations the real nix-instantiate writes, for the shapes the
 * hand-written ones in src/build/graph.test.ts do not cover.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readGraph } from '../../src/build/graph.ts';
import { makeNixEnv } from '../helpers/nix.ts';

test('__structuredAttrs derivations (as nix-instantiate writes them): features and name from __json', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firn-graph-sa-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  using nix = makeNixEnv();
  writeFileSync(
    join(dir, 'sa.nix'),
    'derivation { name = "sa-kernel"; system = "aarch64-linux"; builder = "/bin/sh"; ' +
      '__structuredAttrs = true; requiredSystemFeatures = [ "kvm" "big-parallel" "kvm" ]; }',
  );
  const store = join(dir, 'store');
  const result = await nix.nix('nix-instantiate', ['--store', store, join(dir, 'sa.nix')]);
  const drvPath = result.stdout.toString('utf8').trim();
  const graph = await readGraph([drvPath], { storeRoot: store });
  const node = graph.nodes.get(drvPath) ?? assert.fail('no node');
  assert.equal(node.drv.env.has('requiredSystemFeatures'), false, 'only in __json');
  assert.deepEqual(node.requiredFeatures, ['big-parallel', 'kvm']);
  assert.equal(node.name, 'sa-kernel');
});

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FirnError } from '../errors.ts';
import { serializeDerivation, type Derivation } from '../nix/derivation.ts';
import { pruneCached } from './cache-check.ts';
import { dependentsOf, inputPaths, readGraph } from './graph.ts';

const STORE = '/nix/store';
const hash = (c: string): string => c.repeat(32);

function drv(
  name: string,
  out: string,
  inputs: Record<string, string[]> = {},
  env: Record<string, string> = {},
): Derivation {
  return {
    outputs: new Map([['out', { path: `${STORE}/${out}-${name}`, hashAlgo: '', hash: '' }]]),
    inputDrvs: new Map(Object.entries(inputs)),
    inputSrcs: [`${STORE}/${hash('s')}-builder.sh`],
    system: 'aarch64-linux',
    builder: '/bin/sh',
    args: [],
    env: new Map([['name', name], ...Object.entries(env)]),
  };
}

/** config → kernel → modules; modules and pkg share nothing; root needs modules and pkg. */
function writeStore(root: string): Record<string, string> {
  mkdirSync(join(root, STORE), { recursive: true });
  const paths = {
    config: `${STORE}/${hash('a')}-config.drv`,
    kernel: `${STORE}/${hash('b')}-kernel-6.1.drv`,
    modules: `${STORE}/${hash('c')}-modules.drv`,
    pkg: `${STORE}/${hash('d')}-pkg.drv`,
    system: `${STORE}/${hash('f')}-system.drv`,
  };
  const drvs: Record<string, Derivation> = {
    config: drv('config', hash('0')),
    kernel: drv(
      'kernel-6.1',
      hash('1'),
      { [paths.config]: ['out'] },
      {
        requiredSystemFeatures: 'big-parallel  kvm big-parallel',
      },
    ),
    modules: drv('modules', hash('2'), { [paths.kernel]: ['out'] }),
    pkg: drv('pkg', hash('3')),
    system: drv('system', hash('4'), { [paths.modules]: ['out'], [paths.pkg]: ['out'] }),
  };
  for (const [key, path] of Object.entries(paths)) {
    const value = drvs[key];
    if (value !== undefined) writeFileSync(join(root, path), serializeDerivation(value));
  }
  return paths;
}

test('readGraph reads every drv once, with features, inputs and dependents', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'firn-graph-'));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  const paths = writeStore(root);
  const system = paths.system ?? '';
  const graph = await readGraph([system, system, paths.pkg ?? ''], { storeRoot: root });
  assert.deepEqual(graph.roots, [system, paths.pkg]);
  assert.equal(graph.nodes.size, 5);
  const kernel = graph.nodes.get(paths.kernel ?? '') ?? assert.fail('no kernel node');
  assert.equal(kernel.name, 'kernel-6.1');
  assert.equal(kernel.system, 'aarch64-linux');
  assert.deepEqual(kernel.requiredFeatures, ['big-parallel', 'kvm']);
  assert.deepEqual(inputPaths(graph, kernel), [
    `${STORE}/${hash('0')}-config`,
    `${STORE}/${hash('s')}-builder.sh`,
  ]);
  const dependents = dependentsOf(graph, new Set(graph.nodes.keys()));
  assert.deepEqual(dependents.get(paths.config ?? ''), [paths.kernel]);
  assert.deepEqual(dependents.get(paths.system ?? ''), []);
});

test('readGraph names a missing drv file', async () => {
  await assert.rejects(
    readGraph([`${STORE}/${hash('9')}-gone.drv`], { storeRoot: '/nonexistent-firn' }),
    (error: unknown) => FirnError.is(error) && error.code === 'FIRN_E_FILE_NOT_FOUND',
  );
});

test('pruneCached stops at cached derivations and asks once', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'firn-graph-'));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  const paths = writeStore(root);
  const graph = await readGraph([paths.system ?? ''], { storeRoot: root });
  const queries: string[][] = [];
  // The cache has modules (and, irrelevant now, config): kernel and config need no build.
  const present = new Set([hash('2'), hash('0')]);
  const pruned = await pruneCached(graph, {
    missing(hashes) {
      queries.push([...hashes]);
      return Promise.resolve(new Set(hashes.filter((h) => !present.has(h))));
    },
  });
  assert.equal(queries.length, 1);
  assert.equal(queries[0]?.length, 5);
  assert.deepEqual([...pruned.toBuild].sort(), [paths.pkg, paths.system].sort());
  assert.deepEqual([...pruned.cached], [paths.modules]);
  const nothing = await pruneCached(graph, undefined);
  assert.equal(nothing.toBuild.size, 5);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { baseNameOf, hashPartOf, referencesFirst } from './closure.ts';
import type { PathInfo } from './path-info.ts';

function info(path: string, references: string[]): PathInfo {
  return {
    path,
    narHash: { algorithm: 'sha256', digest: Buffer.alloc(32) },
    narSize: 1,
    references,
    deriver: undefined,
    sigs: [],
    ca: undefined,
  };
}

function graph(edges: Record<string, string[]>): Map<string, PathInfo> {
  return new Map(Object.entries(edges).map(([path, refs]) => [path, info(path, refs)]));
}

function assertReferencesFirst(order: readonly PathInfo[], infos: Map<string, PathInfo>): void {
  const position = new Map(order.map((item, index) => [item.path, index]));
  assert.equal(order.length, infos.size);
  for (const item of order) {
    for (const ref of item.references) {
      if (ref === item.path || !infos.has(ref)) continue;
      assert.ok(
        (position.get(ref) ?? Infinity) < (position.get(item.path) ?? -1),
        `${ref} before ${item.path}`,
      );
    }
  }
}

test('every path comes after its references; self-references and outside paths are ignored', () => {
  const infos = graph({
    top: ['mid', 'lib', 'top'],
    mid: ['lib', 'outside'],
    lib: ['lib'],
    other: [],
  });
  const order = referencesFirst(infos);
  assertReferencesFirst(order, infos);
  assert.deepEqual(
    order.map((item) => item.path),
    ['lib', 'mid', 'top', 'other'],
  );
});

test('a chain 20,000 deep does not overflow the stack', () => {
  const edges: Record<string, string[]> = {};
  for (let i = 0; i < 20_000; i++) edges[`p${i}`] = i === 0 ? [] : [`p${i - 1}`];
  const infos = graph(edges);
  const order = referencesFirst(new Map([...infos].reverse()));
  assert.equal(order[0]?.path, 'p0');
  assert.equal(order.at(-1)?.path, 'p19999');
});

test('a cycle is reported, not looped on', () => {
  assert.throws(() => referencesFirst(graph({ a: ['b'], b: ['a'] })), /cycle/);
});

test('hash part and base name of store paths', () => {
  const path = '/nix/store/0c7qrfbfwgc0ngbp6zs6rzpfkqa3djsl-hello-2.12';
  assert.equal(hashPartOf(path), '0c7qrfbfwgc0ngbp6zs6rzpfkqa3djsl');
  assert.equal(baseNameOf(path), '0c7qrfbfwgc0ngbp6zs6rzpfkqa3djsl-hello-2.12');
});

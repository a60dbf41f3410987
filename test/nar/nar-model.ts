/**
 * An in-memory model of a NAR tree for tests: a reference encoder written from the grammar,
 * builders from reader events and from the file system, and fast-check arbitraries.
 */
import {
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import fc from 'fast-check';
import { encodeStrings } from '../../src/nix/nar-format.ts';
import type { NarEvent } from '../../src/nix/nar-reader.ts';

export type NarTree =
  | { readonly type: 'regular'; readonly executable: boolean; readonly contents: Buffer }
  | { readonly type: 'symlink'; readonly target: Buffer }
  | { readonly type: 'directory'; readonly entries: readonly (readonly [Buffer, NarTree])[] };

export function file(contents: string | Buffer, executable = false): NarTree {
  return { type: 'regular', executable, contents: Buffer.from(contents) };
}
export function link(target: string | Buffer): NarTree {
  return { type: 'symlink', target: Buffer.from(target) };
}
/** Entries are sorted here, bytewise, as in a NAR. */
export function dir(entries: Record<string, NarTree> | (readonly [Buffer, NarTree])[]): NarTree {
  const list = Array.isArray(entries)
    ? entries
    : Object.entries(entries).map(([name, node]) => [Buffer.from(name), node] as const);
  return { type: 'directory', entries: [...list].sort((a, b) => Buffer.compare(a[0], b[0])) };
}

/** The tokens of `tree` in NAR order (file contents as one token). */
function tokens(tree: NarTree): (string | Buffer)[] {
  switch (tree.type) {
    case 'regular':
      return [
        '(',
        'type',
        'regular',
        ...(tree.executable ? ['executable', ''] : []),
        'contents',
        tree.contents,
        ')',
      ];
    case 'symlink':
      return ['(', 'type', 'symlink', 'target', tree.target, ')'];
    case 'directory':
      return [
        '(',
        'type',
        'directory',
        ...tree.entries.flatMap(([name, node]) => [
          'entry',
          '(',
          'name',
          name,
          'node',
          ...tokens(node),
          ')',
        ]),
        ')',
      ];
  }
}

/** The NAR of `tree`, from the grammar alone (independent of the writer under test). */
export function encodeNar(tree: NarTree): Buffer {
  return encodeStrings('nix-archive-1', ...tokens(tree));
}

/** Rebuilds the tree a stream of reader events describes. */
export function treeFromEvents(events: readonly NarEvent[]): NarTree {
  let index = 0;
  const next = (): NarEvent => {
    const event = events[index++];
    if (event === undefined) throw new Error('events end early');
    return event;
  };
  const node = (event: NarEvent): NarTree => {
    switch (event.type) {
      case 'regular': {
        const parts: Buffer[] = [];
        let size = 0;
        while (size < event.size) {
          const piece = next();
          if (piece.type !== 'contents') throw new Error('contents expected');
          parts.push(Buffer.from(piece.data));
          size += piece.data.length;
        }
        return { type: 'regular', executable: event.executable, contents: Buffer.concat(parts) };
      }
      case 'symlink':
        return { type: 'symlink', target: event.target };
      case 'directory': {
        const entries: [Buffer, NarTree][] = [];
        for (;;) {
          const child = next();
          if (child.type === 'directory-end') return { type: 'directory', entries };
          if (child.type === 'contents') throw new Error('stray contents');
          entries.push([child.name, node(child)]);
        }
      }
      default:
        throw new Error(`unexpected ${event.type}`);
    }
  };
  const tree = node(next());
  if (index !== events.length) throw new Error('events left over');
  return tree;
}

/** Creates `tree` at `path` (which must not exist). */
export function materialize(tree: NarTree, path: Buffer | string): void {
  switch (tree.type) {
    case 'regular':
      writeFileSync(path, tree.contents, { mode: tree.executable ? 0o755 : 0o644 });
      return;
    case 'symlink':
      symlinkSync(tree.target, path);
      return;
    case 'directory':
      mkdirSync(path);
      for (const [name, node] of tree.entries) {
        materialize(node, Buffer.concat([Buffer.from(path), Buffer.from('/'), name]));
      }
  }
}

/** Reads the tree at `path` back (only the owner-execute bit counts, as in a NAR). */
export function treeFromFs(path: Buffer | string): NarTree {
  const stat = lstatSync(path);
  if (stat.isSymbolicLink()) return { type: 'symlink', target: readlinkSync(path, 'buffer') };
  if (stat.isFile()) {
    return { type: 'regular', executable: (stat.mode & 0o100) !== 0, contents: readFileSync(path) };
  }
  const names = readdirSync(path, { encoding: 'buffer' });
  return dir(
    names.map((name): [Buffer, NarTree] => [
      name,
      treeFromFs(Buffer.concat([Buffer.from(path), Buffer.from('/'), name])),
    ]),
  );
}

// ── fast-check ──────────────────────────────────────────────────────────────

/** Valid entry names: ASCII of both cases, non-ASCII UTF-8, and raw bytes that are not UTF-8. */
export const nameArbitrary: fc.Arbitrary<Buffer> = fc
  .oneof(
    fc.stringMatching(/^[A-Za-z0-9._-]{1,10}$/).map((s) => Buffer.from(s)),
    fc
      .constantFrom('ä', 'Ä', 'a', 'A', 'Z', 'z', '😀', '\uFFFD', '日本語', 'é', 'E')
      .map((s) => Buffer.from(s)),
    fc.uint8Array({ minLength: 1, maxLength: 12 }).map((bytes) => Buffer.from(bytes)),
  )
  .filter((name) => {
    const text = name.toString('latin1');
    return !name.includes(0) && !name.includes(0x2f) && text !== '.' && text !== '..';
  });

const contentsArbitrary = fc.oneof(
  { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 3000 }).map((b) => Buffer.from(b)) },
);

const targetArbitrary = fc
  .oneof(
    fc.constantFrom('../x', '/nonexistent', 'a/b/c', '.', '..', 'ü'),
    fc.uint8Array({ minLength: 1, maxLength: 30 }).map((b) => Buffer.from(b).toString('latin1')),
  )
  .map((s) => Buffer.from(s, 'latin1'))
  .filter((target) => target.length > 0 && !target.includes(0));

export const treeArbitrary: fc.Arbitrary<NarTree> = fc.letrec<{ tree: NarTree }>((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc
      .tuple(fc.boolean(), contentsArbitrary)
      .map(([executable, contents]): NarTree => ({ type: 'regular', executable, contents })),
    targetArbitrary.map((target): NarTree => ({ type: 'symlink', target })),
    fc
      .uniqueArray(fc.tuple(nameArbitrary, tie('tree')), {
        maxLength: 6,
        selector: ([name]) => name.toString('latin1'),
      })
      .map((entries) => dir(entries)),
  ),
})).tree;

/** Trees whose root is a directory (what a real store path mostly is). */
export const directoryArbitrary: fc.Arbitrary<NarTree> = fc
  .uniqueArray(fc.tuple(nameArbitrary, treeArbitrary), {
    maxLength: 8,
    selector: ([name]) => name.toString('latin1'),
  })
  .map((entries) => dir(entries));

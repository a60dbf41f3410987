/**
 * Ordering a closure for upload: a path's narinfo may go up only after the narinfos of its
 * references (the cache refuses it otherwise, and a client could fetch a half closure).
 */
import type { PathInfo } from './path-info.ts';

/**
 * The paths of `infos` with every path after all of its references (self-references ignored).
 * References outside `infos` are taken as already satisfied. Stable: among paths whose
 * references are done, the input order is kept.
 */
export function referencesFirst(infos: ReadonlyMap<string, PathInfo>): PathInfo[] {
  const order: PathInfo[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  for (const root of infos.keys()) {
    if (state.has(root)) continue;
    // Iterative DFS: a closure can be thousands of paths deep (a chain of derivations).
    const stack: { info: PathInfo; next: number }[] = [];
    const enter = (path: string): void => {
      const info = infos.get(path);
      if (info === undefined || state.has(path)) return;
      state.set(path, 'visiting');
      stack.push({ info, next: 0 });
    };
    enter(root);
    while (stack.length > 0) {
      const frame = stack.at(-1);
      if (frame === undefined) break;
      const ref = frame.info.references[frame.next++];
      if (ref === undefined) {
        stack.pop();
        state.set(frame.info.path, 'done');
        order.push(frame.info);
      } else if (ref !== frame.info.path && state.get(ref) === 'visiting') {
        throw new Error(`reference cycle through ${ref}: the store database is inconsistent`);
      } else if (ref !== frame.info.path) {
        enter(ref);
      }
    }
  }
  return order;
}

/** The hash part of a store path (`/nix/store/<hash>-name` → `<hash>`). */
export function hashPartOf(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base.slice(0, 32);
}

/** The base name of a store path. */
export function baseNameOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

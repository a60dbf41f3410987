/**
 * Turning what a user types (`./result`, `/nix/store/…-hello/bin/hello`, a store path) into the
 * store path it names, following symlinks like `nix copy` does. In a chroot store the links
 * point at logical `/nix/store/…` paths, so they are followed by hand, not with realpath.
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { firnError } from '../errors.ts';
import { parseStorePathBase, quoteForMessage } from '../nix/store-path.ts';
import type { LocalStore } from './path-info.ts';

const MAX_LINKS = 40;

export function resolveStorePathArg(arg: string, store: LocalStore, cwd = process.cwd()): string {
  let path = resolve(cwd, arg);
  for (let hops = 0; !path.startsWith(`${store.storeDir}/`); hops++) {
    let isLink: boolean;
    try {
      isLink = lstatSync(path).isSymbolicLink();
    } catch {
      isLink = false;
    }
    if (!isLink || hops >= MAX_LINKS) throw outsideStore(arg, store);
    path = resolve(dirname(path), readlinkSync(path));
  }
  const base = path.slice(store.storeDir.length + 1).split('/')[0] ?? '';
  try {
    parseStorePathBase(base, store.storeDir);
  } catch (error) {
    throw firnError(
      'FIRN_E_PATH_NOT_IN_STORE',
      `${quoteForMessage(arg)} is not a store path: ${(error as Error).message}`,
      {
        cause: error,
        hint: 'a store path looks like /nix/store/<32 nix-base32 characters>-<name>',
      },
    );
  }
  return `${store.storeDir}/${base}`;
}

function outsideStore(arg: string, store: LocalStore): Error {
  return firnError(
    'FIRN_E_PATH_NOT_IN_STORE',
    `${quoteForMessage(arg)} is not in the Nix store ${store.storeDir} and is not a symlink into it`,
    { hint: 'pass store paths or links to them, such as ./result from nix-build' },
  );
}

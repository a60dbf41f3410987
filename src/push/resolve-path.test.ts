import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { FirnError } from '../errors.ts';
import { resolveStorePathArg } from './resolve-path.ts';

const STORE_PATH = '/nix/store/0c7qrfbfwgc0ngbp6zs6rzpfkqa3djsl-hello-2.12';

function dir(t: TestContext): string {
  const path = mkdtempSync(join(tmpdir(), 'firn-resolve-'));
  t.after(() => {
    rmSync(path, { recursive: true, force: true });
  });
  return path;
}

const chroot = { root: '/nonexistent-root', storeDir: '/nix/store' };

test('store paths and paths inside them name the store path', () => {
  assert.equal(resolveStorePathArg(STORE_PATH, chroot), STORE_PATH);
  assert.equal(resolveStorePathArg(`${STORE_PATH}/bin/hello`, chroot), STORE_PATH);
});

test('symlinks such as ./result are followed by hand, also into a chroot store', (t) => {
  const cwd = dir(t);
  symlinkSync(STORE_PATH, join(cwd, 'result'));
  symlinkSync('result', join(cwd, 'link-to-result'));
  assert.equal(resolveStorePathArg('result', chroot, cwd), STORE_PATH);
  assert.equal(resolveStorePathArg('./link-to-result', chroot, cwd), STORE_PATH);
});

test('paths outside the store, loops and malformed store names are FIRN_E_PATH_NOT_IN_STORE', (t) => {
  const cwd = dir(t);
  writeFileSync(join(cwd, 'file'), '');
  symlinkSync('loop-b', join(cwd, 'loop-a'));
  symlinkSync('loop-a', join(cwd, 'loop-b'));
  mkdirSync(join(cwd, 'd'));
  for (const arg of ['file', 'loop-a', 'd', 'missing', '/nix/store/short-name', '/nix/store']) {
    assert.throws(
      () => resolveStorePathArg(arg, chroot, cwd),
      (error: unknown) => FirnError.is(error) && error.code === 'FIRN_E_PATH_NOT_IN_STORE',
      arg,
    );
  }
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  compareVersions,
  parseDf,
  parseNixVersion,
  parseShowConfig,
  settingList,
} from './nix-facts.ts';

// Lines as Nix 2.8's `nix show-config` prints them (empty values end in "= ").
const SHOW_CONFIG = `accept-flake-config = false
access-tokens = 
extra-platforms = i686-linux x86_64-v1-linux aarch64-linux
narinfo-cache-negative-ttl = 30
nix-path = nixpkgs=/etc/nixpkgs other=/x
substituters = http://ser5.internal:5000 https://cache.nixos.org/
system = x86_64-linux
system-features = benchmark big-parallel kvm nixos-test
trusted-users = root @wheel nix-builder
`;

test('parseShowConfig reads every name = value line, empty values included', () => {
  const settings = parseShowConfig(SHOW_CONFIG);
  assert.equal(settings.get('system'), 'x86_64-linux');
  assert.equal(settings.get('access-tokens'), '');
  assert.equal(settings.get('nix-path'), 'nixpkgs=/etc/nixpkgs other=/x');
  assert.equal(settings.get('narinfo-cache-negative-ttl'), '30');
  assert.equal(settings.size, 9);
  assert.deepEqual(settingList(settings, 'trusted-users'), ['root', '@wheel', 'nix-builder']);
  assert.deepEqual(settingList(settings, 'access-tokens'), []);
  assert.deepEqual(settingList(settings, 'absent'), []);
});

test('parseShowConfig skips what is not a setting line', () => {
  const settings = parseShowConfig(
    'warning: unknown setting foo\nsystem = aarch64-linux\n\n  indented = no\n',
  );
  assert.deepEqual([...settings], [['system', 'aarch64-linux']]);
});

test('parseNixVersion reads nix-store and nix version lines', () => {
  assert.deepEqual(parseNixVersion('nix-store (Nix) 2.8.0\n'), { text: '2.8.0', parts: [2, 8, 0] });
  assert.deepEqual(parseNixVersion('nix (Nix) 2.24.0pre20240801_dirty\n'), {
    text: '2.24.0pre20240801_dirty',
    parts: [2, 24, 0],
  });
  assert.deepEqual(parseNixVersion('nix-store (Nix) 2.3'), { text: '2.3', parts: [2, 3] });
  assert.equal(parseNixVersion('sh: nix-store: not found'), undefined);
});

test('compareVersions orders by number, not text', () => {
  assert.ok(compareVersions([2, 10], [2, 8]) > 0);
  assert.ok(compareVersions([2, 3, 16], [2, 8]) < 0);
  assert.equal(compareVersions([2, 8, 0], [2, 8]), 0);
  assert.ok(compareVersions([3], [2, 99]) > 0);
});

test('parseDf reads POSIX df -Pk output, mount points with spaces included', () => {
  const space = parseDf(
    'Filesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         264212084 35393244  70997668      34% /mnt/my disk\n',
  );
  assert.deepEqual(space, {
    sizeBytes: 264212084 * 1024,
    availableBytes: 70997668 * 1024,
    usedPercent: 34,
    mountPoint: '/mnt/my disk',
  });
  assert.equal(parseDf('df: /nix/store: No such file or directory\n'), undefined);
  assert.equal(
    parseDf('Filesystem 1024-blocks Used Available Capacity Mounted on\nx y z w v /\n'),
    undefined,
  );
});

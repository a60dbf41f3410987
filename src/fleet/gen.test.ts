import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseMachines } from '../nix/machines.ts';
import { renderMachinesFile, fleetMachines } from './gen-machines.ts';
import { renderNixConf } from './gen-nix-conf.ts';
import { GENERATED_MARKER, renderNixosModule } from './gen-nixos.ts';
import { cacheListen, planHost } from './gen-plan.ts';
import { findHost, parseFleet } from './inventory.ts';
import { nixAttrName, nixRaw, nixString, nixValue } from './nix-expr.ts';

const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGC2IOBs+7L49MOh1KT4azAJNFfn1kFr3qjPonJVttom';
const CACHE_KEY = 'ser5-1:7L4/e7RqMTG7uxqBtLEeQjrkUNPDoRtmguMMGpVONrg=';

const fleet = parseFleet(
  `
[cache]
url = "http://ser5.internal:5000"
public-key = "${CACHE_KEY}"

[defaults]
ssh-key = "/root/.ssh/id_nix_builder"

[hosts.opi01]
address = "opi01.internal"
systems = ["aarch64-linux"]
max-jobs = 6
speed-factor = 2
features = ["big-parallel"]
mandatory-features = ["opi"]
roles = ["builder", "target"]
host-key = "${ED25519}"

[hosts.ser5]
systems = ["x86_64-linux"]
max-jobs = 12
speed-factor = 4
roles = ["builder", "cache"]
ssh-user = "root"

[hosts.eagle]
roles = ["target"]

[hosts.calypso]
roles = []
`,
  '/fleet/firn.toml',
);
const host = (name: string): ReturnType<typeof findHost> => findHost(fleet, name);

/** The non-comment lines of a nix.conf. */
function settings(text: string): string[] {
  return text.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
}

describe('the plan by role', () => {
  test('builders build and push; others send builds to every builder but themselves', () => {
    const opi01 = planHost(fleet, host('opi01'));
    assert.equal(opi01.builds, true);
    assert.equal(opi01.pushes, true);
    assert.equal(opi01.trustedUser, 'nix-builder');
    assert.deepEqual(opi01.systemFeatures, ['big-parallel', 'opi']);
    assert.deepEqual(opi01.remoteBuilders, []);
    const ser5 = planHost(fleet, host('ser5'));
    assert.equal(ser5.trustedUser, undefined, 'root is trusted already');
    assert.equal(ser5.servesCache, true);
    const eagle = planHost(fleet, host('eagle'));
    assert.equal(eagle.builds, false);
    assert.equal(eagle.pushes, false);
    assert.deepEqual(
      eagle.remoteBuilders.map((b) => b.name),
      ['opi01', 'ser5'],
    );
  });

  test('without a cache nobody pushes', () => {
    const bare = parseFleet('[hosts.b]\nsystems = ["x86_64-linux"]\nroles = ["builder"]\n', '/f');
    const plan = planHost(bare, findHost(bare, 'b'));
    assert.equal(plan.pushes, false);
    assert.equal(plan.cacheUrl, undefined);
  });

  test('cacheListen takes the port of the URL', () => {
    assert.deepEqual(cacheListen('http://ser5:5000'), {
      listen: '0.0.0.0:5000',
      portFromUrl: true,
    });
    assert.deepEqual(cacheListen('https://cache.example.org'), {
      listen: '0.0.0.0:5000',
      portFromUrl: false,
    });
  });
});

describe('firn gen nix-conf', () => {
  test('a builder: cache, TTL, trusted user, features, no onward builders, netrc, hook', () => {
    assert.deepEqual(settings(renderNixConf(fleet, host('opi01'))), [
      'extra-substituters = http://ser5.internal:5000',
      `extra-trusted-public-keys = ${CACHE_KEY}`,
      'narinfo-cache-negative-ttl = 30',
      'extra-trusted-users = nix-builder',
      'extra-system-features = big-parallel opi',
      'builders =',
      'netrc-file = /etc/nix/netrc',
      'post-build-hook = /usr/local/bin/firn-hook',
    ]);
  });

  test('a root builder needs no trusted-users line', () => {
    const lines = settings(renderNixConf(fleet, host('ser5'), { hook: '/opt/firn/hook' }));
    assert.ok(!lines.some((line) => line.includes('trusted-users')));
    assert.ok(lines.includes('post-build-hook = /opt/firn/hook'));
  });

  test('a target and the laptop start builds on the builders', () => {
    for (const name of ['eagle', 'calypso']) {
      assert.deepEqual(settings(renderNixConf(fleet, host(name), { machinesFile: '/m' })), [
        'extra-substituters = http://ser5.internal:5000',
        `extra-trusted-public-keys = ${CACHE_KEY}`,
        'narinfo-cache-negative-ttl = 30',
        'builders = @/m',
        'builders-use-substitutes = true',
      ]);
    }
  });

  test('a missing cache key is said, not silently dropped', () => {
    const keyless = parseFleet('[cache]\nurl = "http://c:1"\n[hosts.a]\n', '/f');
    const text = renderNixConf(keyless, findHost(keyless, 'a'));
    assert.match(text, /# The inventory has no \[cache\] public-key/);
    assert.ok(!text.includes('trusted-public-keys ='));
  });
});

describe('firn gen machines', () => {
  test('one line per builder that Nix reads back to the same machines', () => {
    const text = renderMachinesFile(fleet);
    const lines = text.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
    assert.deepEqual(lines, [
      `ssh://nix-builder@opi01.internal aarch64-linux /root/.ssh/id_nix_builder 6 2 big-parallel opi ${Buffer.from(ED25519).toString('base64')}`,
      'ssh://root@ser5 x86_64-linux /root/.ssh/id_nix_builder 12 4 - - -',
    ]);
    assert.deepEqual(parseMachines(text, { thisSystem: 'x86_64-linux' }), fleetMachines(fleet));
  });

  test('--ssh-key and --protocol', () => {
    const [first] = fleetMachines(fleet, { sshKey: '/etc/nix/id', protocol: 'ssh-ng' });
    assert.ok(first !== undefined);
    assert.equal(first.uri, 'ssh-ng://nix-builder@opi01.internal');
    assert.equal(first.sshKey, '/etc/nix/id');
  });

  test('no builders: only comments', () => {
    const text = renderMachinesFile(parseFleet('[hosts.a]\n', '/f'));
    assert.deepEqual(parseMachines(text), []);
    assert.match(text, /no host with the role "builder"/);
  });
});

describe('firn gen nixos', () => {
  const keys = [`${ED25519} laptop`];

  test('starts with the marker and takes { lib, ... }', () => {
    const text = renderNixosModule(fleet, host('eagle'), { authorizedKeys: keys });
    assert.ok(text.startsWith(GENERATED_MARKER));
    assert.match(text, /^\{ lib, \.\.\. \}:$/m);
  });

  test('a builder gets its user, trust, features, sshd, hook and drain', () => {
    const text = renderNixosModule(fleet, host('opi01'), { authorizedKeys: keys });
    for (const expected of [
      'users.users.nix-builder = {',
      'isSystemUser = true;',
      `openssh.authorizedKeys.keys = [ "${ED25519} laptop" ];`,
      'users.groups.nix-builder = { };',
      'nix.settings.trusted-users = [ "root" "nix-builder" ];',
      'nix.settings.extra-system-features = [ "big-parallel" "opi" ];',
      'services.openssh.enable = true;',
      'nix.settings.netrc-file = lib.mkDefault "/etc/nix/netrc";',
      'services.firn.hook.enable = true;',
    ]) {
      assert.ok(text.includes(expected), `missing: ${expected}\n${text}`);
    }
    assert.ok(!text.includes('buildMachines'), 'a builder does not send builds on');
  });

  test('a root builder authorizes root and makes no user', () => {
    const text = renderNixosModule(fleet, host('ser5'), { authorizedKeys: keys });
    assert.match(text, /users\.users\.root\.openssh\.authorizedKeys\.keys = \[/);
    assert.ok(!text.includes('users.groups'));
    assert.match(text, /services\.firn\.listen = "0\.0\.0\.0:5000";/);
    assert.match(text, /services\.firn\.keyName = "ser5-1";/);
  });

  test('a target gets the builders, with pinned host keys', () => {
    const text = renderNixosModule(fleet, host('eagle'), { authorizedKeys: keys });
    assert.match(text, /nix\.distributedBuilds = true;/);
    assert.match(text, /hostName = "opi01\.internal";/);
    assert.match(text, /mandatoryFeatures = \[ "opi" \];/);
    assert.match(text, /programs\.ssh\.knownHosts\.firn-opi01 = \{/);
    assert.ok(!text.includes('users.users'));
  });
});

describe('nix-expr', () => {
  test('strings escape what Nix would interpret', () => {
    assert.equal(nixString('a"b\\c${d}\n\t$e'), '"a\\"b\\\\c\\${d}\\n\\t$e"');
  });

  test('attribute names are quoted when they must be', () => {
    assert.equal(nixAttrName('nix-builder'), 'nix-builder');
    assert.equal(nixAttrName('with'), '"with"');
    assert.equal(nixAttrName('1x'), '"1x"');
    assert.equal(nixAttrName('a.b'), '"a.b"');
  });

  test('values: lists on one line when short, sets indented, chains dotted, raw as is', () => {
    assert.equal(nixValue([1, true, null, 'x']), '[ 1 true null "x" ]');
    assert.equal(nixValue({}), '{ }');
    assert.equal(
      nixValue({ a: { b: { c: 1 } }, d: nixRaw('lib.mkForce 2') }),
      '{\n  a.b.c = 1;\n  d = lib.mkForce 2;\n}',
    );
    assert.throws(() => nixValue(1.5));
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { FirnError } from '../errors.ts';
import {
  expandHome,
  findHost,
  formatPath,
  loadFleet,
  parseFleet,
  resolveFleetPath,
  selectHosts,
  type Fleet,
} from './inventory.ts';
import { fleetJsonSchema, KNOWN_KEYS } from './inventory-schema.ts';
import { machinesHostKey, parseSshPublicKey } from './ssh-host-key.ts';
import { closest, editDistance } from './suggest.ts';
import { isNixSystem, systemProblem } from './systems.ts';
import { locateKey } from './toml-locate.ts';

const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGC2IOBs+7L49MOh1KT4azAJNFfn1kFr3qjPonJVttom';
const ECDSA =
  'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJ+zC7uvVyEuZhVNFvQ7FHCxzG83W9lq4w2c2Yt6/80WN/ytkuv8Lu4zaamw5KEY5vjOyqVEe42x8ILnbO3Fjj8=';
const CACHE_KEY = 'ser5-1:7L4/e7RqMTG7uxqBtLEeQjrkUNPDoRtmguMMGpVONrg=';
const FILE = '/etc/firn/firn.toml';

const EXAMPLE = `
[cache]
url = "http://ser5.internal:5000/"
public-key = "${CACHE_KEY}"

[defaults]
ssh-user = "nix-builder"
ssh-key = "~/.ssh/id_nix_builder"
ssh-config = "ssh_config"

[hosts.opi01]
address = "opi01.internal"
systems = ["aarch64-linux"]
max-jobs = 6
speed-factor = 2
features = ["big-parallel", "big-parallel", "benchmark"]
mandatory-features = []
roles = ["builder", "target"]
host-key = "${ED25519} root@opi01"
tags = ["opi"]

[hosts.opi02]
address = "opi02.internal"
systems = ["aarch64-linux"]
roles = ["builder", "target"]
tags = ["opi"]

[hosts.ser5]
systems = ["x86_64-linux", "i686-linux"]
roles = ["builder", "cache"]
ssh-user = "root"
ssh-key = "/root/.ssh/id_ser5"

[hosts.calypso]
roles = []
`;

/** Parses `text` and returns the FIRN_E_FLEET_INVALID error it must raise. */
function problems(text: string): { message: string; lines: string[] } {
  try {
    parseFleet(text, FILE);
  } catch (error) {
    assert.ok(FirnError.is(error), String(error));
    assert.equal(error.code, 'FIRN_E_FLEET_INVALID');
    assert.equal(error.exitCode, 78);
    return { message: error.message, lines: error.message.split('\n').slice(1) };
  }
  assert.fail('expected FIRN_E_FLEET_INVALID');
}

function host(body: string, name = 'opi01'): string {
  return `[hosts.${name}]\n${body}\n`;
}

describe('a valid inventory', () => {
  const fleet: Fleet = parseFleet(EXAMPLE, FILE);

  test('keeps the cache, without a trailing slash', () => {
    assert.deepEqual(fleet.cache, { url: 'http://ser5.internal:5000', publicKey: CACHE_KEY });
    assert.equal(fleet.file, FILE);
  });

  test('lists hosts in file order with every key resolved', () => {
    assert.deepEqual(
      fleet.hosts.map((h) => h.name),
      ['opi01', 'opi02', 'ser5', 'calypso'],
    );
    const opi01 = findHost(fleet, 'opi01');
    assert.deepEqual(
      { ...opi01, ssh: { ...opi01.ssh } },
      {
        name: 'opi01',
        address: 'opi01.internal',
        systems: ['aarch64-linux'],
        maxJobs: 6,
        speedFactor: 2,
        features: ['benchmark', 'big-parallel'],
        mandatoryFeatures: [],
        roles: ['builder', 'target'],
        hostKey: ED25519,
        tags: ['opi'],
        ssh: {
          user: 'nix-builder',
          key: '~/.ssh/id_nix_builder',
          config: '/etc/firn/ssh_config',
        },
      },
    );
  });

  test('applies defaults: address = name, 1 job, speed 1, role target, [defaults] ssh', () => {
    const ser5 = findHost(fleet, 'ser5');
    assert.equal(ser5.address, 'ser5');
    assert.equal(ser5.maxJobs, 1);
    assert.equal(ser5.speedFactor, 1);
    assert.equal(ser5.hostKey, undefined);
    assert.deepEqual(ser5.ssh, {
      user: 'root',
      key: '/root/.ssh/id_ser5',
      config: '/etc/firn/ssh_config',
    });
    assert.deepEqual(findHost(fleet, 'calypso').roles, []);
    const minimal = parseFleet(host(''), FILE);
    const only = minimal.hosts[0];
    assert.ok(only !== undefined);
    assert.deepEqual(only.roles, ['target']);
    assert.equal(only.ssh.user, 'nix-builder');
    assert.equal(only.ssh.key, undefined);
    assert.equal(minimal.cache, undefined);
  });

  test('an empty file is an empty fleet', () => {
    assert.deepEqual(parseFleet('', FILE).hosts, []);
  });

  test('is frozen', () => {
    assert.ok(Object.isFrozen(fleet.hosts));
    assert.ok(Object.isFrozen(fleet.hosts[0]));
    assert.ok(Object.isFrozen(fleet.hosts[0]?.systems));
  });

  test('selectHosts takes names and @tags, in inventory order, each once', () => {
    const names = (selectors: string[]): string[] =>
      selectHosts(fleet, selectors).map((h) => h.name);
    assert.deepEqual(names([]), ['opi01', 'opi02', 'ser5', 'calypso']);
    assert.deepEqual(names(['ser5', '@opi', 'opi01']), ['opi01', 'opi02', 'ser5']);
  });

  test('unknown hosts and tags say what is closest', () => {
    assert.throws(
      () => findHost(fleet, 'opi1'),
      (error: FirnError) =>
        error.code === 'FIRN_E_FLEET_HOST_UNKNOWN' &&
        error.message.includes('"opi1"') &&
        (error.hint ?? '').includes('did you mean "opi01"?'),
    );
    assert.throws(
      () => selectHosts(fleet, ['@opis']),
      (error: FirnError) =>
        error.code === 'FIRN_E_FLEET_HOST_UNKNOWN' && (error.hint ?? '').includes('"@opi"'),
    );
    assert.throws(
      () => findHost(fleet, 'zzzzzzzz'),
      (error: FirnError) =>
        (error.hint ?? '').includes('the hosts are: opi01, opi02, ser5, calypso'),
    );
  });
});

describe('inventory errors', () => {
  test('name the file, the line, the key path and what to write', () => {
    const { message, lines } = problems(
      `[hosts.opi01]\naddress = "a"\nsystems = ["arm64-linux"]\n`,
    );
    assert.match(message, /^the fleet inventory \/etc\/firn\/firn\.toml has a problem:/);
    assert.deepEqual(lines, [
      '  /etc/firn/firn.toml:3: hosts.opi01.systems[0]: "arm64-linux" is not a Nix system name; write "aarch64-linux"',
    ]);
  });

  test('list every problem at once, by line, with details for --json', () => {
    try {
      parseFleet(host('max_jobs = 2\nroles = ["biulder"]\nsystems = "x86_64-linux"'), FILE);
      assert.fail('expected an error');
    } catch (error) {
      assert.ok(FirnError.is(error));
      const details = error.details as { problems: { path: string; line: number }[] };
      assert.deepEqual(
        details.problems.map((p) => [p.line, p.path]),
        [
          [2, 'hosts.opi01.max_jobs'],
          [3, 'hosts.opi01.roles[0]'],
          [4, 'hosts.opi01.systems'],
        ],
      );
      assert.match(error.hint ?? '', /docs\/fleet\.md/);
    }
  });

  test('TOML syntax errors give the line', () => {
    const { lines } = problems('[hosts.opi01]\nsystems = [\n');
    assert.match(lines[0] ?? '', /^ {2}\/etc\/firn\/firn\.toml:\d+: this is not valid TOML: /);
  });

  describe('unknown keys suggest the closest known key', () => {
    const cases: [string, string, RegExp][] = [
      ['top level', '[hostz.opi01]\n', /:1: hostz: unknown key "hostz"; did you mean "hosts"\?/],
      [
        '[cache]',
        '[cache]\nurl = "http://c:5000"\npublickey = "x"\n',
        /:3: cache\.publickey: .*did you mean "public-key"\?/,
      ],
      [
        '[defaults]',
        '[defaults]\nssh_user = "x"\n',
        /:2: defaults\.ssh_user: .*did you mean "ssh-user"\?/,
      ],
      [
        'host, snake_case',
        host('max_jobs = 2'),
        /:2: hosts\.opi01\.max_jobs: .*did you mean "max-jobs"\?/,
      ],
      ['host, camelCase', host('speedFactor = 2'), /did you mean "speed-factor"\?/],
      ['host, typo', host('sytems = ["x86_64-linux"]'), /did you mean "systems"\?/],
      ['host, singular', host('role = ["builder"]'), /did you mean "roles"\?/],
      [
        'host, nothing close',
        host('colour = "blue"'),
        /unknown key "colour"; the keys here are address, systems, max-jobs/,
      ],
    ];
    for (const [name, text, expected] of cases) {
      test(name, () => {
        assert.match(problems(text).message, expected);
      });
    }
  });

  describe('bad systems say what to write', () => {
    const cases: [string, RegExp][] = [
      ['arm64-linux', /"arm64-linux" is not a Nix system name; write "aarch64-linux"/],
      ['amd64-linux', /write "x86_64-linux"/],
      ['linux-aarch64', /write "aarch64-linux"/],
      ['aarch64-unknown-linux-gnu', /write "aarch64-linux"/],
      ['x86_64-macos', /write "x86_64-darwin"/],
      ['X86_64-Linux', /write "x86_64-linux"/],
      ['aarch64', /"aarch64" names only the CPU; add the OS, e.g. "aarch64-linux"/],
      ['arm64', /names only the CPU; add the OS, e.g. "aarch64-linux"/],
      ['linux', /"linux" names only the OS; add the CPU, e.g. "x86_64-linux"/],
      ['pdp11-unix', /is not a Nix system name \(CPU-OS\); write e\.g\. "x86_64-linux"/],
      ['', /is not a Nix system name/],
    ];
    for (const [system, expected] of cases) {
      test(JSON.stringify(system), () => {
        assert.match(problems(host(`systems = [${JSON.stringify(system)}]`)).message, expected);
      });
    }
    test('real system names pass', () => {
      for (const system of [
        'x86_64-linux',
        'aarch64-linux',
        'aarch64-darwin',
        'x86_64-darwin',
        'i686-linux',
        'armv7l-linux',
        'armv6l-linux',
        'riscv64-linux',
        'powerpc64le-linux',
        'x86_64-v3-linux',
        'x86_64-freebsd',
      ]) {
        assert.ok(isNixSystem(system), system);
        assert.equal(systemProblem(system), undefined);
      }
    });
  });

  test('duplicate addresses, given or implied by the host name, case-insensitive', () => {
    const given = problems(
      host('address = "board.lan"', 'opi01') + host('address = "BOARD.lan"', 'opi02'),
    );
    assert.match(
      given.message,
      /firn\.toml:4: hosts\.opi02\.address: address "BOARD\.lan" is also the address of hosts\.opi01; each machine is listed once/,
    );
    const implied = problems(host('address = "ser5"', 'box') + host('', 'ser5'));
    assert.match(
      implied.message,
      /hosts\.ser5\.address: address "ser5" \(its name: it has no address\) is also the address of hosts\.box/,
    );
  });

  test('a builder without systems', () => {
    assert.match(
      problems(host('roles = ["builder"]')).message,
      /firn\.toml:1: hosts\.opi01\.systems: a builder needs the systems it builds for; write e\.g\. systems = \["aarch64-linux"\]/,
    );
    assert.match(
      problems(host('roles = ["builder"]\nsystems = []')).message,
      /:3: hosts\.opi01\.systems: a builder needs/,
    );
  });

  test('a bad role suggests the closest, or lists them', () => {
    assert.match(
      problems(host('roles = ["biulder"]')).message,
      /hosts\.opi01\.roles\[0\]: "biulder" is not a role; did you mean "builder"\?/,
    );
    assert.match(
      problems(host('roles = ["laptop"]')).message,
      /"laptop" is not a role; write one of "builder", "cache", "target"/,
    );
    assert.match(
      problems(host('roles = "builder"')).message,
      /hosts\.opi01\.roles: expected a list \["…"\], found the string "builder"; write e\.g\. roles = \["builder", "target"\]/,
    );
  });

  test('role cache needs a [cache] table', () => {
    assert.match(
      problems(host('roles = ["cache"]')).message,
      /hosts\.opi01\.roles: role "cache" needs a \[cache\] table/,
    );
  });

  describe('host keys', () => {
    const cases: [string, string, RegExp][] = [
      [
        'a fingerprint',
        'SHA256:uGvjVFbvuwhgQ5YwlqXDAVTkkOS9OGR81mIn1sOXjy8',
        /is a fingerprint, not a key; .*ssh-keyscan/,
      ],
      [
        'a known_hosts line',
        `opi01.internal ${ED25519}`,
        /starts with "opi01\.internal", as a known_hosts line does; drop the host name and write "ssh-ed25519 AAAA/,
      ],
      [
        'the machines-file base64',
        machinesHostKey(ED25519),
        /is the base64 form the machines file uses; write the decoded line instead: "ssh-ed25519 AAAA/,
      ],
      [
        'a mislabelled key',
        `ssh-ed25519 ${ECDSA.split(' ')[1] ?? ''}`,
        /says "ssh-ed25519" but holds a "ecdsa-sha2-nistp256" key/,
      ],
      ['no key', 'ssh-ed25519', /has no base64 key after "ssh-ed25519"/],
      ['garbage', 'hello world', /does not start with a key type/],
      ['a damaged key', 'ssh-ed25519 AAAA', /damaged key/],
    ];
    for (const [name, value, expected] of cases) {
      test(name, () => {
        assert.match(problems(host(`host-key = ${JSON.stringify(value)}`)).message, expected);
      });
    }
    test('ecdsa keys pass; comments are dropped', () => {
      const fleet = parseFleet(host(`host-key = "${ECDSA} comment here"`), FILE);
      assert.equal(fleet.hosts[0]?.hostKey, ECDSA);
    });
  });

  describe('the cache', () => {
    test('a public key without a name', () => {
      assert.match(
        problems(
          `[cache]\nurl = "http://c:5000"\npublic-key = "7L4/e7RqMTG7uxqBtLEeQjrkUNPDoRtmguMMGpVONrg="\n`,
        ).message,
        /cache\.public-key: a public key is name:base64 and this one has no ":"/,
      );
    });
    test('a secret key is refused loudly', () => {
      const secret = `ser5-1:${Buffer.alloc(64, 7).toString('base64')}`;
      assert.match(
        problems(`[cache]\nurl = "http://c:5000"\npublic-key = "${secret}"\n`).message,
        /this is a SECRET key \(64 bytes\): never put it in the inventory/,
      );
    });
    test('a short key', () => {
      assert.match(
        problems(`[cache]\nurl = "http://c:5000"\npublic-key = "k:AAAA"\n`).message,
        /not base64 of 32 bytes/,
      );
    });
    test('the url must be http(s)', () => {
      assert.match(
        problems(`[cache]\nurl = "ftp://c"\n`).message,
        /cache\.url: write an http:\/\/ or https:\/\/ URL/,
      );
      assert.match(problems(`[cache]\nurl = "ser5:5000"\n`).message, /cache\.url: write an http/);
      assert.match(
        problems(`[cache]\n`).message,
        /cache\.url: url is required; write e\.g\. url = "http/,
      );
    });
  });

  describe('values of the wrong kind', () => {
    const cases: [string, string, RegExp][] = [
      [
        'max-jobs as a string',
        'max-jobs = "6"',
        /hosts\.opi01\.max-jobs: expected a number, found the string "6"; write e\.g\. max-jobs = 6/,
      ],
      [
        'max-jobs 0',
        'max-jobs = 0',
        /hosts\.opi01\.max-jobs: must be at least 1, not number 0; write e\.g\. max-jobs = 6/,
      ],
      [
        'a fractional speed-factor',
        'speed-factor = 2.5',
        /hosts\.opi01\.speed-factor: expected a whole number, found number 2\.5/,
      ],
      [
        'features with a comma',
        'features = ["kvm,big-parallel"]',
        /features\[0\]: a feature cannot be empty or hold whitespace, ",", "#" or ";"/,
      ],
      ['a tag with a space', 'tags = ["my tag"]', /tags\[0\]: a tag cannot/],
      [
        'an address with a user',
        'address = "root@opi01"',
        /address: an address is a host name or IP address, without user@/,
      ],
      ['a bad ssh user', 'ssh-user = "Root Admin"', /ssh-user: a user name is/],
    ];
    for (const [name, body, expected] of cases) {
      test(name, () => {
        assert.match(problems(host(body)).message, expected);
      });
    }
    test('a host given as a value, not a table', () => {
      assert.match(
        problems('hosts = { opi01 = 3 }\n').message,
        /hosts\.opi01: expected a table, found number 3/,
      );
    });
  });

  test('host names must work as file and attribute names', () => {
    assert.match(
      problems('[hosts."ser5.lan"]\n').message,
      /hosts\."ser5\.lan": a host name is letters, digits, "-" and "_" \(put a DNS name in `address`\)/,
    );
  });
});

describe('loading', () => {
  test('a missing file is FIRN_E_FILE_NOT_FOUND with a hint', async () => {
    await assert.rejects(loadFleet('/nonexistent/firn.toml'), (error: FirnError) => {
      return (
        error.code === 'FIRN_E_FILE_NOT_FOUND' &&
        error.message.includes('no fleet inventory at /nonexistent/firn.toml') &&
        (error.hint ?? '').includes('--fleet FILE')
      );
    });
  });

  test('loadFleet reads the file and anchors relative paths at its folder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'firn-inventory-'));
    try {
      const file = join(dir, 'firn.toml');
      writeFileSync(file, '[defaults]\nssh-key = "keys/id"\n[hosts.a]\n');
      const fleet = await loadFleet(file);
      assert.equal(fleet.hosts[0]?.ssh.key, join(dir, 'keys/id'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('resolveFleetPath: --fleet, then FIRN_FLEET, then ./firn.toml', () => {
    assert.equal(
      resolveFleetPath({ flag: 'a.toml', env: { FIRN_FLEET: '/b.toml' }, cwd: '/w' }),
      '/w/a.toml',
    );
    assert.equal(resolveFleetPath({ env: { FIRN_FLEET: '/b.toml' }, cwd: '/w' }), '/b.toml');
    assert.equal(resolveFleetPath({ env: { FIRN_FLEET: '' }, cwd: '/w' }), '/w/firn.toml');
  });

  test('expandHome', () => {
    assert.equal(expandHome('~/.ssh/id', { HOME: '/home/me' }), '/home/me/.ssh/id');
    assert.equal(expandHome('/abs', { HOME: '/home/me' }), '/abs');
    assert.equal(expandHome('~other/x', { HOME: '/home/me' }), '~other/x');
  });
});

describe('helpers', () => {
  test('formatPath', () => {
    assert.equal(formatPath(['hosts', 'opi01', 'systems', 0]), 'hosts.opi01.systems[0]');
    assert.equal(formatPath(['hosts', 'a.b']), 'hosts."a.b"');
    assert.equal(formatPath([]), '');
  });

  test('locateKey finds headers, keys and quoted names; misses give undefined', () => {
    const text = '# c\n[cache]\nurl = "x"\n\n[hosts."opi 01"]\nsystems = []\n  max-jobs=2\n';
    assert.equal(locateKey(text, ['cache', 'url']), 3);
    assert.equal(locateKey(text, ['hosts', 'opi 01', 'systems', 0]), 6);
    assert.equal(locateKey(text, ['hosts', 'opi 01', 'max-jobs']), 7);
    assert.equal(locateKey(text, ['hosts', 'opi 01', 'roles']), 5);
    assert.equal(locateKey(text, ['hosts']), 5);
    assert.equal(locateKey(text, ['nothing']), undefined);
  });

  test('closest and editDistance', () => {
    assert.equal(editDistance('kitten', 'sitting'), 3);
    assert.equal(editDistance('ab', 'ba'), 1);
    assert.equal(closest('max_jobs', KNOWN_KEYS.host), 'max-jobs');
    assert.equal(closest('HOST-KEY', KNOWN_KEYS.host), 'host-key');
    assert.equal(closest('xyz', KNOWN_KEYS.host), undefined);
  });

  test('parseSshPublicKey and machinesHostKey', () => {
    const parsed = parseSshPublicKey(`  ${ED25519}   me@laptop `);
    assert.ok(parsed.ok);
    assert.equal(Buffer.from(machinesHostKey(ED25519), 'base64').toString(), ED25519);
  });

  test('the JSON schema covers every key the loader knows', () => {
    const schema = fleetJsonSchema() as {
      properties: {
        hosts: { additionalProperties: { properties: Record<string, unknown> } };
        cache: { properties: Record<string, unknown> };
        defaults: { properties: Record<string, unknown> };
      };
    };
    assert.deepEqual(Object.keys(schema.properties), KNOWN_KEYS.top);
    assert.deepEqual(
      Object.keys(schema.properties.hosts.additionalProperties.properties),
      KNOWN_KEYS.host,
    );
    assert.deepEqual(Object.keys(schema.properties.cache.properties), KNOWN_KEYS.cache);
    assert.deepEqual(Object.keys(schema.properties.defaults.properties), KNOWN_KEYS.defaults);
  });
});

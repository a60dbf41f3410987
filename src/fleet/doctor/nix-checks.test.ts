import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseFleet, type Host } from '../inventory.ts';
import {
  evaluateDisk,
  evaluateFeatures,
  evaluateNegativeTtl,
  evaluateNixVersion,
  evaluateSystems,
  evaluateTrustedUser,
  storeProbeScript,
} from './nix-checks.ts';
import { parseShowConfig } from './nix-facts.ts';

function host(entry: string): Host {
  const fleet = parseFleet(`[hosts.opi01]\n${entry}\n`, '/fleet/firn.toml');
  const found = fleet.hosts[0];
  assert.ok(found !== undefined);
  return found;
}

const config = (text: string): Map<string, string> => parseShowConfig(text);

test('nix-version: 2.8 and newer pass; older, missing or broken Nix fail with a fix', () => {
  assert.deepEqual(evaluateNixVersion(0, 'nix-store (Nix) 2.18.1\n', ''), {
    id: 'nix-version',
    ok: true,
    detail: 'Nix 2.18.1',
    hint: undefined,
  });
  const old = evaluateNixVersion(0, 'nix-store (Nix) 2.3.16\n', '');
  assert.equal(old.ok, false);
  assert.equal(old.detail, 'Nix 2.3.16 is older than 2.8');
  assert.match(old.hint ?? '', /upgrade Nix to 2\.8 or newer/);
  const missing = evaluateNixVersion(127, '', 'bash: line 1: nix-store: command not found\n');
  assert.equal(missing.detail, 'nix-store is not on the PATH of an ssh session');
  assert.match(missing.hint ?? '', /non-interactive `ssh HOST nix-store --version`/);
  const broken = evaluateNixVersion(1, '', 'error: cannot open database\n');
  assert.equal(broken.detail, '`nix-store --version` failed: error: cannot open database');
});

test('systems: each declared system must be the system or an extra platform', () => {
  const arm = host('systems = ["aarch64-linux", "x86_64-linux"]\nroles = ["builder"]');
  const ok = evaluateSystems(
    arm,
    config('system = x86_64-linux\nextra-platforms = i686-linux aarch64-linux\n'),
  );
  assert.equal(ok.ok, true);
  assert.equal(
    ok.detail,
    'aarch64-linux, x86_64-linux (system x86_64-linux, extra-platforms i686-linux aarch64-linux)',
  );
  const missing = evaluateSystems(arm, config('system = x86_64-linux\nextra-platforms = \n'));
  assert.deepEqual(missing, {
    id: 'systems',
    ok: false,
    detail:
      'aarch64-linux declared but not supported (system x86_64-linux, extra-platforms (none))',
    hint: 'add `extra-platforms = aarch64-linux` to nix.conf with emulation (NixOS: boot.binfmt.emulatedSystems = [ "aarch64-linux" ]), or take it out of hosts.opi01.systems',
  });
});

test('features: declared and mandatory features must be system features', () => {
  const builder = host(
    'systems = ["x86_64-linux"]\nroles = ["builder"]\nfeatures = ["kvm", "big-parallel"]\nmandatory-features = ["gpu"]',
  );
  const result = evaluateFeatures(builder, config('system-features = big-parallel kvm\n'));
  assert.equal(result.ok, false);
  assert.equal(
    result.detail,
    'gpu declared but not a system feature (system-features big-parallel kvm)',
  );
  assert.match(result.hint ?? '', /^add `extra-system-features = gpu` to nix\.conf/);
  assert.equal(
    evaluateFeatures(builder, config('system-features = big-parallel gpu kvm nixos-test\n')).ok,
    true,
  );
});

test('trusted-user: root, the user by name, *, or one of its @groups', () => {
  const settings = config('trusted-users = root @wheel\n');
  assert.equal(evaluateTrustedUser('root', [], config('trusted-users = \n')).ok, true);
  assert.equal(evaluateTrustedUser('nix-builder', ['users', 'wheel'], settings).ok, true);
  assert.equal(
    evaluateTrustedUser('nix-builder', [], config('trusted-users = nix-builder\n')).ok,
    true,
  );
  assert.equal(evaluateTrustedUser('nix-builder', [], config('trusted-users = *\n')).ok, true);
  const refused = evaluateTrustedUser('nix-builder', ['nix-builder'], settings);
  assert.deepEqual(refused, {
    id: 'trusted-user',
    ok: false,
    detail: 'nix-builder is not trusted (trusted-users = root @wheel)',
    hint: 'add `extra-trusted-users = nix-builder` to nix.conf and restart nix-daemon (NixOS: nix.settings.trusted-users = [ "root" "nix-builder" ])',
  });
});

test('negative-ttl: at most 30 s passes; Nix default of an hour fails', () => {
  assert.equal(evaluateNegativeTtl(config('narinfo-cache-negative-ttl = 30\n')).ok, true);
  assert.equal(evaluateNegativeTtl(config('narinfo-cache-negative-ttl = 0\n')).ok, true);
  const slow = evaluateNegativeTtl(config('narinfo-cache-negative-ttl = 3600\n'));
  assert.equal(slow.ok, false);
  assert.match(slow.detail, /^narinfo-cache-negative-ttl = 3600: /);
  assert.equal(
    slow.hint,
    'set `narinfo-cache-negative-ttl = 30` in nix.conf (`firn gen nix-conf` has it)',
  );
  assert.equal(evaluateNegativeTtl(config('system = x\n')).ok, false);
});

test('disk: fails below the minimum, says how much is free', () => {
  const df = (availableKiB: number): string =>
    `Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 10485760 1 ${availableKiB} 90% /nix\n`;
  const ok = evaluateDisk(df(2 * 1024 * 1024), 1024 ** 3);
  assert.deepEqual([ok.ok, ok.detail], [true, '2.0 GiB free on /nix (90% used)']);
  const full = evaluateDisk(df(512 * 1024), 1024 ** 3);
  assert.equal(full.ok, false);
  assert.equal(full.detail, '512.0 MiB free on /nix (90% used), less than 1.0 GiB');
  assert.match(full.hint ?? '', /nix-collect-garbage/);
  assert.equal(evaluateDisk('garbage', 1).ok, false);
});

test('the store probe script adds a file holding the nonce, quoted for sh', () => {
  const script = storeProbeScript("ab'c");
  assert.match(
    script,
    /printf '%s\\n' 'firn doctor store probe ab'\\''c' > "\$d\/firn-doctor-probe"/,
  );
  assert.match(script, /^p=\$\(nix-store --add "\$d\/firn-doctor-probe"\)$/m);
  assert.match(script, /^nix-store --delete "\$p"/m);
});

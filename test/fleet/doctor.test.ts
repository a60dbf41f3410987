/**
 * `firn doctor` on the real test fleet, with a real `firn serve` as the cache: a healthy fleet
 * passes every check (the round trip pushes a path from here and each host substitutes it); a
 * host lacking the extra-platforms for its declared system, one trusting the wrong key, one with
 * a wrong push token, one whose sshd is down and one that is off the network are each singled
 * out with the right check id and fix while the others pass; a pinned host key that does not
 * match stops ssh; an unreachable host fails within 5 s and does not hold up the others.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runDoctor } from '../../src/fleet/doctor/runner.ts';
import { makeProbe, PROBE_NAME } from '../../src/fleet/doctor/round-trip.ts';
import { CHECK_IDS, type HostReport } from '../../src/fleet/doctor/types.ts';
import { loadFleet, selectHosts } from '../../src/fleet/inventory.ts';
import { firn } from '../helpers/firn.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { startFleet, type Fleet } from './fleet.ts';
import { generateKey } from './sshd.ts';

const HEALTHY = ['ser5', 'opi01', 'eagle'];
/** A well-formed key nobody signs with. */
const OTHER_KEY = 'other-cache-1:7L4/e7RqMTG7uxqBtLEeQjrkUNPDoRtmguMMGpVONrg=';

interface JsonCheck {
  id: string;
  ok: boolean;
  detail: string;
  hint: string | null;
}
interface JsonHost {
  name: string;
  ok: boolean;
  checks: JsonCheck[];
}

describe('firn doctor on the test fleet', () => {
  let work: string;
  let server: TestServer;
  let fleet: Fleet;
  let inventory: string;
  let pushToken: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'firn-doctor-test-'));
    server = await startTestServer();
    pushToken = await server.token('push');
    fleet = await startFleet({
      hosts: [
        { name: 'ser5' },
        {
          name: 'opi01',
          extraPlatforms: ['aarch64-linux'],
          inventory: { systems: ['aarch64-linux'], features: ['big-parallel'], roles: ['builder'] },
        },
        { name: 'eagle', inventory: { roles: ['target'] } },
        // Declares aarch64-linux, but its nix.conf has no extra-platforms.
        { name: 'opi02', inventory: { systems: ['aarch64-linux'], roles: ['builder'] } },
        // Trusts another key than the cache's.
        {
          name: 'cardinal',
          nixConf: `trusted-public-keys = ${OTHER_KEY}`,
          inventory: { roles: ['target'] },
        },
        // Its netrc holds a token the cache never issued.
        { name: 'opi03', inventory: { roles: ['builder'] } },
        { name: 'dead', inventory: { roles: ['target'] } },
        { name: 'away', inventory: { roles: ['target'] } },
      ],
      cacheUrl: server.url,
      cachePublicKey: await server.publicKey(),
    });
    for (const name of ['ser5', 'opi01', 'opi02']) {
      writeFileSync(
        fleet.host(name).path('conf', 'netrc'),
        `machine ${fleet.gateway} login firn password ${pushToken}\n`,
        { mode: 0o600 },
      );
    }
    writeFileSync(
      fleet.host('opi03').path('conf', 'netrc'),
      `machine ${fleet.gateway} login firn password firn_not-a-token-the-cache-made\n`,
      { mode: 0o600 },
    );
    await fleet.host('dead').stopSshd();
    fleet.host('away').disconnect();
    inventory = fleet.writeInventory(join(work, 'firn.toml'));
  });
  after(async () => {
    // The server goes whatever the fleet's cleanup says: a live child would keep the test
    // process waiting until its timeout.
    try {
      await fleet[Symbol.asyncDispose]();
    } finally {
      await server[Symbol.asyncDispose]();
    }
    rmSync(work, { recursive: true, force: true });
  });

  const doctor = (args: readonly string[]): ReturnType<typeof firn> =>
    firn(['doctor', '--fleet', inventory, ...args], { env: { FIRN_TOKEN: pushToken } });

  test('a healthy fleet passes every check, the round trip included', async () => {
    const result = await doctor(HEALTHY);
    const out = result.stdout.toString('utf8');
    assert.equal(result.code, 0, out + result.stderr);
    assert.doesNotMatch(out, /✗/);
    assert.ok(!out.includes('\u001b['), 'no colour when stdout is not a terminal');
    assert.match(out, /\nall 3 hosts ok\n$/);
    const builder = [
      'ssh',
      'nix-version',
      'store-writable',
      'systems',
      'trusted-user',
      'cache-reachable',
      'cache-key',
      'substituter',
      'push-token',
      'negative-ttl',
      'disk',
      'round-trip',
    ];
    const expected: Record<string, string[]> = {
      ser5: builder,
      opi01: [...builder.slice(0, 4), 'features', ...builder.slice(4)],
      eagle: builder.filter((id) => id !== 'trusted-user' && id !== 'push-token'),
    };
    const blocks = out.split('\n\n');
    for (const [index, name] of HEALTHY.entries()) {
      const block = blocks[index] ?? '';
      assert.match(
        block,
        new RegExp(`^${name}  ${fleet.host(name).address.replaceAll('.', '\\.')}  `),
      );
      const ids = [...block.matchAll(/^ {2}✓ (\S+)/gm)].map((match) => match[1]);
      assert.deepEqual(ids, expected[name], `${name}:\n${block}`);
    }
    assert.match(out, /aarch64-linux \(system x86_64-linux, extra-platforms [^)]*aarch64-linux/);
    // The round trip pushed a fresh path, and the cache has it.
    const pushed =
      /pushed (\/nix\/store\/([0-9a-z]{32})-firn-doctor-probe) from here; the host substituted it/.exec(
        out,
      );
    assert.ok(pushed?.[2] !== undefined, out);
    const narinfo = await fetch(`${server.url}/${pushed[2]}.narinfo`);
    assert.equal(narinfo.status, 200);
    assert.ok(!(await fleet.host('eagle').isValid(pushed[1] ?? '')), 'deleted again on the host');
  });

  test('each broken host is singled out with the right check and fix; the others pass', async () => {
    const result = await doctor(['--json']);
    assert.equal(result.code, 1, result.stderr);
    const report = JSON.parse(result.stdout.toString('utf8')) as { hosts: JsonHost[] };

    // The documented shape, exactly.
    assert.deepEqual(Object.keys(report), ['hosts']);
    assert.deepEqual(
      report.hosts.map((host) => host.name),
      fleet.hosts.map((host) => host.name),
    );
    for (const host of report.hosts) {
      assert.deepEqual(Object.keys(host), ['name', 'ok', 'checks']);
      assert.equal(
        host.ok,
        host.checks.every((check) => check.ok),
      );
      for (const check of host.checks) {
        assert.deepEqual(Object.keys(check), ['id', 'ok', 'detail', 'hint']);
        assert.ok((CHECK_IDS as readonly string[]).includes(check.id), check.id);
        assert.equal(typeof check.detail, 'string');
        assert.equal(check.hint === null, check.ok, `${host.name} ${check.id}: hint iff ✗`);
      }
    }

    const byName = new Map(report.hosts.map((host) => [host.name, host]));
    const failing = (name: string): JsonCheck[] =>
      byName.get(name)?.checks.filter((check) => !check.ok) ?? [];
    for (const name of HEALTHY) {
      assert.deepEqual(failing(name), [], name);
      assert.ok((byName.get(name)?.checks.length ?? 0) >= 10);
    }

    const [systems] = failing('opi02');
    assert.deepEqual(
      failing('opi02').map((check) => check.id),
      ['systems'],
    );
    assert.match(systems?.detail ?? '', /aarch64-linux declared but not supported/);
    assert.match(systems?.hint ?? '', /extra-platforms = aarch64-linux/);

    const cacheKey = await server.publicKey();
    assert.deepEqual(
      failing('cardinal').map((check) => check.id),
      ['cache-key', 'round-trip'],
    );
    assert.match(
      failing('cardinal')[0]?.detail ?? '',
      /is not in trusted-public-keys \(other-cache-1:/,
    );
    assert.ok(
      failing('cardinal')[0]?.hint?.includes(`extra-trusted-public-keys = ${cacheKey}`),
      failing('cardinal')[0]?.hint ?? '',
    );
    assert.equal(failing('cardinal')[1]?.hint, 'fix cache-key first');

    assert.deepEqual(
      failing('opi03').map((check) => check.id),
      ['push-token'],
    );
    assert.match(failing('opi03')[0]?.detail ?? '', /refuses .* \(HTTP 401: unknown or revoked\)/);
    assert.match(
      failing('opi03')[0]?.hint ?? '',
      /firn cache token create --name opi03 --scope push.*machine 10\.213\.\d+\.1 login firn password <token>/,
    );

    const dead = byName.get('dead')?.checks ?? [];
    assert.deepEqual(
      dead.map((check) => [check.id, check.ok]),
      [['ssh', false]],
    );
    assert.match(dead[0]?.detail ?? '', /connection refused/);
    assert.match(dead[0]?.hint ?? '', /start sshd on dead/);

    const away = byName.get('away')?.checks ?? [];
    assert.deepEqual(
      away.map((check) => [check.id, check.ok]),
      [['ssh', false]],
    );
    assert.match(away[0]?.detail ?? '', /no answer within 4\.5 s/);
    assert.match(away[0]?.hint ?? '', /is away up and on the network\?/);
  });

  test('a pinned host key that does not match stops ssh, with the fix', async () => {
    const other = generateKey(join(work, 'other_host_key'), 'other');
    const pinned = fleet.writeInventory(join(work, 'pinned.toml'), {
      hosts: { eagle: { 'host-key': other } },
    });
    const result = await firn(['doctor', '--fleet', pinned, 'eagle', 'ser5', '--no-round-trip']);
    const out = result.stdout.toString('utf8');
    assert.equal(result.code, 1, out);
    assert.match(
      out,
      /^ {2}✗ ssh +root@10\.213\.\d+\.\d+: the host presented a different key than hosts\.eagle\.host-key\n +fix: if eagle was reinstalled, set host-key to the output of `ssh-keyscan -t ed25519 /m,
    );
    assert.match(out, /^ {2}✓ ssh +root@10\.213\.\d+\.\d+, host key pinned$/m, 'ser5 still passes');
    assert.doesNotMatch(out, /round-trip/);
    assert.match(out, /\n1 of 2 hosts has problems: eagle\n$/);
  });

  test('an unreachable host fails within 5 s and holds up no one', async () => {
    const loaded = await loadFleet(inventory);
    const started = Date.now();
    const report = await runDoctor(loaded, selectHosts(loaded, ['away', 'eagle', 'dead']), {
      env: process.env,
      minFreeBytes: 1,
      roundTrip: false,
    });
    const elapsed = Date.now() - started;
    const find = (name: string): HostReport => {
      const found = report.hosts.find((host) => host.name === name);
      assert.ok(found !== undefined, name);
      return found;
    };
    const [away, eagle, dead] = [find('away'), find('eagle'), find('dead')];
    assert.equal(away.ok, false);
    assert.ok(away.ms < 5000, `away took ${away.ms} ms`);
    assert.equal(dead.ok, false);
    assert.ok(dead.ms < 2000, `dead took ${dead.ms} ms`);
    assert.equal(eagle.ok, true, JSON.stringify(eagle.checks));
    // All at once: the whole run takes the slowest host's time, not the sum.
    assert.ok(
      elapsed < away.ms + eagle.ms,
      `${elapsed} ms in all; away ${away.ms}, eagle ${eagle.ms}`,
    );
  });

  test('the round-trip path is the one nix-store --add makes', async () => {
    const contents = 'firn doctor oracle check\n';
    const host = fleet.host('eagle');
    writeFileSync(host.path('tmp', PROBE_NAME), contents);
    const added = await host.execChecked('nix-store', ['--add', host.path('tmp', PROBE_NAME)]);
    assert.equal(added.stdout.toString('utf8').trim(), makeProbe(contents).storePath);
  });
});

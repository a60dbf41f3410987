/**
 * The test fleet itself: three real hosts (network + mount namespaces, sshd, own /nix and
 * nix.conf) come up, ssh into them checks host keys, their stores are separate, an x86_64 host
 * with extra-platforms builds for aarch64-linux, a host substitutes what another pushed to a
 * firn cache, a killed host fails fast, and nothing is left after dispose or after a crash.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { expandHome, loadFleet } from '../../src/fleet/inventory.ts';
import { run } from '../../src/process/run.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { cleanupStale, startFleet, type Fleet, type FleetHost } from './fleet.ts';
import { ip, listNetns, mountPointsUnder, pidsInNamespace } from './netns.ts';

const salt = randomUUID();

/** A derivation whose builder is /bin/sh, so any host can "build" it for any declared system. */
function derivationExpr(name: string, system = 'builtins.currentSystem'): string {
  return `derivation { name = "${name}"; system = ${system}; builder = "/bin/sh"; salt = "${salt}"; args = [ "-c" "echo built ${name} on $(uname -m) > $out" ]; }`;
}

async function buildOn(host: FleetHost, name: string, system?: string): Promise<string> {
  const result = await host.ssh(['nix-build', '--no-out-link', '-E', derivationExpr(name, system)]);
  assert.equal(result.code, 0, `${host.name}: ${result.stderr}`);
  return result.stdout.toString('utf8').trim();
}

describe('the test fleet', () => {
  let server: TestServer;
  let fleet: Fleet;
  let work: string;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'firn-fleet-test-'));
    server = await startTestServer();
    fleet = await startFleet({
      hosts: [
        { name: 'opi01', extraPlatforms: ['aarch64-linux'] },
        { name: 'ser5' },
        { name: 'eagle' },
      ],
      cacheUrl: server.url,
      cachePublicKey: await server.publicKey(),
    });
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

  test('three hosts come up; ssh reaches each with strict host-key checking', async () => {
    for (const host of fleet.hosts) {
      const result = await host.ssh(
        'nix-store --version; echo "$NIX_CONF_DIR"; ip -o -4 addr show eth0',
      );
      assert.equal(result.code, 0, result.stderr);
      const [version, confDir, addr] = result.stdout.toString('utf8').trim().split('\n');
      assert.match(version ?? '', /^nix-store \(Nix\) 2\./);
      assert.equal(confDir, host.nixConfDir, 'sessions see the host nix.conf');
      assert.match(addr ?? '', new RegExp(`inet ${host.address.replaceAll('.', '\\.')}/24`));
    }
    // A known_hosts file that pins another host's key: ssh must refuse.
    const wrong = join(work, 'wrong_known_hosts');
    const [opi01, ser5] = [fleet.host('opi01'), fleet.host('ser5')];
    writeFileSync(wrong, `${opi01.address} ${ser5.hostKey}\n`);
    const refused = await opi01.ssh(['true'], {
      sshArgs: ['-o', `UserKnownHostsFile=${wrong}`],
    });
    assert.equal(refused.code, 255);
    assert.match(
      refused.stderr,
      /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/,
    );
  });

  test('hosts reach each other over the bridge', async () => {
    const [opi01, ser5] = [fleet.host('opi01'), fleet.host('ser5')];
    const result = await ser5.ssh(['ip', '-o', '-4', 'addr', 'show', 'eth0'], { from: opi01 });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout.toString('utf8'), new RegExp(ser5.address.replaceAll('.', '\\.')));
  });

  test("each host has its own store; the machine's /nix is untouched", async () => {
    const [opi01, ser5] = [fleet.host('opi01'), fleet.host('ser5')];
    const path = await buildOn(opi01, 'separate');
    assert.ok(await opi01.isValid(path));
    assert.ok(!(await ser5.isValid(path)), 'not valid on another host');
    assert.ok(existsSync(opi01.path('nix', path.slice('/nix/'.length))));
    assert.ok(!existsSync(ser5.path('nix', path.slice('/nix/'.length))));
    assert.ok(!existsSync(path), 'not in the real /nix/store');
  });

  test('an x86_64 host with extra-platforms builds aarch64-linux; one without cannot', async () => {
    const path = await buildOn(fleet.host('opi01'), 'arm', '"aarch64-linux"');
    const content = await fleet.host('opi01').execChecked('cat', [path]);
    assert.match(content.stdout.toString('utf8'), /^built arm on/);
    const refused = await fleet
      .host('ser5')
      .ssh(['nix-build', '--no-out-link', '-E', derivationExpr('arm', '"aarch64-linux"')]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /aarch64-linux/);
  });

  test('nix-store --serve --write answers the serve handshake over ssh', async () => {
    const hello = Buffer.alloc(16);
    hello.writeBigUInt64LE(0x390c9debn, 0);
    hello.writeBigUInt64LE(0x206n, 8);
    const result = await fleet
      .host('ser5')
      .ssh(['nix-store', '--serve', '--write'], { input: hello });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.readBigUInt64LE(0), 0x5452eecbn);
    assert.equal(result.stdout.readBigUInt64LE(8) >> 8n, 2n, 'serve protocol major 2');
  });

  test('a host substitutes what another pushed to the firn cache', async () => {
    const [opi01, eagle] = [fleet.host('opi01'), fleet.host('eagle')];
    assert.ok(fleet.cacheUrl?.startsWith(`http://${fleet.gateway}:`));
    const path = await buildOn(opi01, 'shared');
    const token = await server.token('push');
    writeFileSync(
      opi01.path('conf', 'netrc'),
      `machine ${fleet.gateway} login firn password ${token}\n`,
    );
    const pushed = await opi01.ssh(['nix', 'copy', '--to', fleet.cacheUrl ?? '', path]);
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.ok(!(await eagle.isValid(path)));
    const fetched = await eagle.ssh(['nix-store', '--realise', path]);
    assert.equal(fetched.code, 0, fetched.stderr);
    assert.ok(await eagle.isValid(path));
    const content = await eagle.execChecked('cat', [path]);
    assert.match(content.stdout.toString('utf8'), /^built shared on/);
  });

  test('the inventory it writes loads, and its ssh settings log in with the pinned key', async () => {
    const file = fleet.writeInventory(join(work, 'firn.toml'), {
      hosts: { eagle: { roles: ['target'] } },
    });
    const inventory = await loadFleet(file);
    assert.equal(inventory.cache?.url, fleet.cacheUrl);
    assert.deepEqual(
      inventory.hosts.map((host) => [host.name, host.address, host.hostKey]),
      fleet.hosts.map((host) => [host.name, host.address, host.hostKey]),
    );
    assert.deepEqual(inventory.hosts[2]?.roles, ['target']);
    const host = inventory.hosts[1];
    assert.ok(host?.ssh.config !== undefined && host.ssh.key !== undefined);
    const result = await run('ssh', [
      '-F',
      host.ssh.config,
      '-i',
      expandHome(host.ssh.key),
      '-o',
      'StrictHostKeyChecking=yes',
      `${host.ssh.user}@${host.address}`,
      'nix-store',
      '--version',
    ]);
    assert.equal(result.code, 0, result.stderr);
  });

  test('a killed host fails ssh fast; a disconnected one times out; both come back', async () => {
    const eagle = fleet.host('eagle');
    eagle.kill();
    let started = Date.now();
    const down = await eagle.ssh(['true']);
    assert.equal(down.code, 255);
    assert.match(down.stderr, /refused/i);
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
    await eagle.startSshd();
    assert.equal((await eagle.ssh(['true'])).code, 0);

    eagle.disconnect();
    started = Date.now();
    const away = await eagle.ssh(['true'], { sshArgs: ['-o', 'ConnectTimeout=1'] });
    assert.equal(away.code, 255);
    assert.match(away.stderr, /timed out/i);
    assert.ok(Date.now() - started < 4000);
    eagle.reconnect();
    await eagle.stopSshd();
    assert.equal((await eagle.ssh(['true'])).code, 255, 'sshd stopped');
    await eagle.startSshd();
    assert.equal((await eagle.ssh(['true'])).code, 0);
  });
});

test('dispose leaves no namespace, mount, link, process or file behind', async () => {
  const fleet = await startFleet({ hosts: [{ name: 'solo' }] });
  const { net, mnt } = fleet.namespaceInodes();
  const host = fleet.host('solo');
  const sleeper = host.wrap('sleep', ['600']);
  const child = spawn(sleeper.command, sleeper.args, { stdio: 'ignore' });
  const exited = new Promise<string | null>((resolve) =>
    child.once('exit', (_code, signal) => {
      resolve(signal);
    }),
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  const inside = pidsInNamespace('net', net[0] ?? 0);
  assert.ok(inside.length >= 2, 'sshd and sleep run inside');
  assert.deepEqual(pidsInNamespace('mnt', mnt[0] ?? 0).sort(), [...inside].sort());
  await fleet[Symbol.asyncDispose]();
  assert.equal(await exited, 'SIGKILL');
  // Namespace inodes can be reused at once by another test's fleet: check the processes instead.
  assert.deepEqual(inside.filter(running), [], 'every process of the host is gone');
  assert.deepEqual(
    listNetns().filter((name) => name.startsWith(`firn-${fleet.id}-`)),
    [],
  );
  assert.equal(ip(['-o', 'link', 'show', 'dev', `firn-${fleet.id}`], undefined, true), '');
  assert.deepEqual(mountPointsUnder(fleet.dir), []);
  assert.ok(!existsSync(fleet.dir));
});

/** Alive and not a zombie waiting to be reaped. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

test('cleanupStale removes what a crashed run left behind', async () => {
  const script = `import { startFleet } from ${JSON.stringify(new URL('./fleet.ts', import.meta.url).href)};
const fleet = await startFleet({ hosts: [{ name: 'crash' }] });
console.log(fleet.id + ' ' + fleet.dir);
setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('\n')) resolve(out.trim());
    });
    child.once('exit', (code) => {
      reject(new Error(`child exited ${code}`));
    });
  });
  const [id = '', dir = ''] = line.split(' ');
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  assert.ok(listNetns().includes(`firn-${id}-crash`), 'the crashed run left its namespace');
  assert.ok(mountPointsUnder(dir).length > 0, 'and its mounts');
  assert.ok(cleanupStale().includes(id));
  assert.deepEqual(
    listNetns().filter((name) => name.startsWith(`firn-${id}-`)),
    [],
  );
  assert.deepEqual(mountPointsUnder(dir), []);
  assert.ok(!existsSync(dir));
});

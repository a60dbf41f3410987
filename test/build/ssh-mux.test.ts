/**
 * SshMux on the test fleet: sessions share one authenticated ssh connection per builder, a
 * master carries at most `maxSessions` sessions (sshd's MaxSessions), close() ends the masters
 * and their sessions, and a master that died is replaced. Connections are counted in the host's
 * sshd log ("Accepted publickey"), processes by their command line.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SshMux, type SshSession } from '../../src/build/ssh-mux.ts';
import { sshTarget, type SshTarget } from '../../src/build/ssh.ts';
import { parseFleet } from '../../src/fleet/inventory.ts';
import { run } from '../../src/process/run.ts';
import { startFleet, type Fleet } from '../fleet/fleet.ts';
import { makeNixEnv } from '../helpers/nix.ts';

describe('ssh multiplexing on the test fleet', () => {
  let fleet: Fleet;
  let dir: string;
  let target: SshTarget;

  before(async () => {
    fleet = await startFleet({ hosts: [{ name: 'opi01' }] });
    dir = mkdtempSync(join(tmpdir(), 'firn-mux-test-'));
    const inventory = parseFleet(fleet.inventory(), 'firn.toml');
    const host = inventory.hosts.find((h) => h.name === 'opi01') ?? assert.fail('no opi01');
    // The pinned host key goes to a known_hosts file of our own: checked, never learned.
    target = sshTarget(host, dir);
  });
  after(async () => {
    await fleet[Symbol.asyncDispose]();
    rmSync(dir, { recursive: true, force: true });
  });

  const accepted = (): number =>
    (readFileSync(fleet.host('opi01').path('sshd.log'), 'utf8').match(/Accepted publickey/g) ?? [])
      .length;
  /** Our masters: ssh processes with ControlMaster=yes and a socket in this test's dir. */
  const masters = (): number => {
    const out = spawnSync('pgrep', [
      '-f',
      `ControlMaster=yes -o ControlPath=${dir}/`,
    ]).stdout.toString('utf8');
    return out.split('\n').filter(Boolean).length;
  };
  const runOn = async (session: SshSession, command: string): Promise<string> => {
    try {
      const result = await run('ssh', [...session.args, '--', command]);
      assert.equal(result.code, 0, result.stderr);
      return result.stdout.toString('utf8').trim();
    } finally {
      session.release();
    }
  };

  test('every session rides on one connection; close() ends the master', async () => {
    const before = accepted();
    const mux = new SshMux(target, { dir });
    mux.warm();
    const outputs = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => runOn(await mux.session(), `echo hello-${i}`)),
    );
    assert.deepEqual(
      outputs,
      [0, 1, 2, 3, 4].map((i) => `hello-${i}`),
    );
    // `nix copy --to ssh://` with the session's NIX_SSHOPTS (how sources reach a builder)
    // uses the same master.
    using nix = makeNixEnv();
    const store = join(nix.dir, 'store');
    writeFileSync(join(nix.dir, 'source.txt'), `source ${randomUUID()}\n`);
    const added = await nix.nix('nix-store', [
      '--store',
      store,
      '--add',
      join(nix.dir, 'source.txt'),
    ]);
    const path = added.stdout.toString('utf8').trim();
    const session = await mux.session();
    const copy = await run(
      'nix',
      ['copy', '--no-check-sigs', '--store', store, '--to', `ssh://${target.destination}`, path],
      { env: { ...nix.env, NIX_SSHOPTS: session.nixSshOpts } },
    );
    session.release();
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(await fleet.host('opi01').isValid(path), true);
    assert.equal(accepted() - before, 1, 'one ssh handshake for all sessions');
    assert.equal(masters(), 1);
    assert.equal(statSync(dir).mode & 0o777, 0o700, 'control sockets sit in a private dir');
    await mux.close();
    assert.equal(masters(), 0, 'no master left after close()');
  });

  test('a master carries at most maxSessions sessions; more open another master', async () => {
    const before = accepted();
    const mux = new SshMux(target, { dir, maxSessions: 2 });
    try {
      // Five long sessions at once: 3 masters (2 + 2 + 1).
      const sessions = await Promise.all(Array.from({ length: 5 }, () => mux.session()));
      const children = sessions.map((session) =>
        spawn('ssh', [...session.args, '--', 'read line'], { stdio: ['pipe', 'ignore', 'pipe'] }),
      );
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(accepted() - before, 3);
      assert.equal(masters(), 3);
      for (const child of children) child.stdin.end('done\n');
      const codes = await Promise.all(
        children.map((child) => new Promise((resolve) => child.once('exit', resolve))),
      );
      assert.deepEqual(codes, [0, 0, 0, 0, 0]);
      for (const session of sessions) session.release();
      // Freed slots are reused: no new handshake.
      await runOn(await mux.session(), 'true');
      assert.equal(accepted() - before, 3);
    } finally {
      await mux.close();
    }
    assert.equal(masters(), 0);
  });

  test("more sessions than sshd's MaxSessions (10) at once all succeed", async () => {
    const mux = new SshMux(target, { dir });
    try {
      const outputs = await Promise.all(
        Array.from({ length: 14 }, async (_, i) =>
          runOn(await mux.session(), `sleep 0.5; echo ${i}`),
        ),
      );
      assert.equal(outputs.length, 14);
      assert.ok(masters() >= 2, `masters: ${masters()}`);
    } finally {
      await mux.close();
    }
  });

  test('a master that died is replaced by the next session', async () => {
    const mux = new SshMux(target, { dir });
    try {
      await runOn(await mux.session(), 'true');
      const before = accepted();
      // Another client asks the master to exit, as a dead connection would make it.
      const session = await mux.session();
      session.release();
      const exit = await run('ssh', [...session.args.slice(0, -1), '-O', 'exit', 'opi01']);
      assert.equal(exit.code, 0, exit.stderr);
      assert.equal(await runOn(await mux.session(), 'echo back'), 'back');
      assert.equal(accepted() - before, 1, 'a new master');
    } finally {
      await mux.close();
    }
  });

  test('close() while the master is still starting leaves no master behind', async () => {
    for (const delay of [0, 100, 200]) {
      const mux = new SshMux(target, { dir });
      mux.warm();
      await new Promise((resolve) => setTimeout(resolve, delay));
      await mux.close();
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(masters(), 0, `closed ${delay} ms after starting`);
    }
  });

  test('a control path too long for a Unix socket falls back to plain sessions', async () => {
    const long = join(dir, 'x'.repeat(100));
    mkdirSync(long, { mode: 0o700 });
    const mux = new SshMux(target, { dir: long });
    const session = await mux.session();
    assert.deepEqual(session.args, target.args);
    assert.equal(await runOn(session, 'echo plain'), 'plain');
    await mux.close();
  });

  test('an unreachable builder fails the session with the ssh error', async () => {
    const mux = new SshMux(
      { ...target, options: [...target.options, '-p', '1'], args: [] },
      { dir },
    );
    await assert.rejects(mux.session(), /builder opi01: ssh failed: .*(refused|port 1)/s);
    await mux.close();
  });
});

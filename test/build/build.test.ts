/**
 * `firn build` on the test fleet: three hosts standing in for aarch64 boards (extra-platforms),
 * two jobs each, and a loopback firn cache. The coordinator's own store is a chroot store that
 * holds the .drv files and the sources (builtins.toFile), which it copies to builders once.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Fleet } from '../fleet/fleet.ts';
import { firn, FIRN_BIN } from '../helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';
import type { TestServer } from '../helpers/server.ts';
import { startBuildFleet, type BuildFleet } from './build-fleet.ts';

const BOARDS = ['opi01', 'opi02', 'opi03'];

/**
 * The board graph scaled down: config 0.2 s → kernel 1.6 s → modules 0.2 s beside
 * twelve 0.4 s packages; the attribute set holds modules and the packages.
 */
function boardExpr(salt: string): string {
  return `
let
  step = builtins.toFile "step.sh" ''
    sleep "$1"
    echo "$name $salt" > $out
  '';
  mk = name: seconds: extra: derivation ({
    inherit name salt;
    system = "aarch64-linux";
    builder = "/bin/sh";
    args = [ step seconds ];
    PATH = "/bin:/usr/bin";
  } // extra);
  salt = "${salt}";
  config = mk "config" "0.2" {};
  kernel = mk "kernel-6.1" "1.6" { inherit config; };
  modules = mk "modules" "0.2" { inherit kernel; };
  pkg = i: { name = "pkg\${toString i}"; value = mk "pkg\${toString i}-1.0" "0.4" {}; };
in { inherit modules; } // builtins.listToAttrs (map pkg [ 1 2 3 4 5 6 7 8 9 10 11 12 ])
`;
}

/** bad fails; child needs bad; ok and needs-ok are independent of it. */
function failureExpr(salt: string): string {
  return `
let
  mk = name: script: extra: derivation ({
    inherit name; salt = "${salt}"; system = "aarch64-linux"; builder = "/bin/sh";
    args = [ "-c" script ]; PATH = "/bin:/usr/bin";
  } // extra);
  bad = mk "bad" "echo boom-from-bad; echo second line >&2; exit 1" {};
  ok = mk "ok" "sleep 0.3; echo ok > $out" {};
in {
  child = mk "child" "echo child > $out" { inherit bad; };
  needs-ok = mk "needs-ok" "echo fine > $out" { inherit ok; };
}
`;
}

interface Event {
  readonly event: string;
  readonly drvPath?: string;
  readonly name?: string;
  readonly builder?: string;
  readonly [key: string]: unknown;
}

function events(stdout: Buffer): Event[] {
  return stdout
    .toString('utf8')
    .trim()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Event);
}

describe('firn build on the test fleet', () => {
  let server: TestServer;
  let fleet: Fleet;
  let nix: NixEnv;
  let work: string;
  let store: string;
  let inventory: string;

  let setup: BuildFleet;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'firn-build-test-'));
    nix = makeNixEnv('sandbox-paths = /bin /lib /lib64 /usr');
    store = join(work, 'store');
    setup = await startBuildFleet({ boards: BOARDS, maxJobs: 2, work });
    ({ server, fleet, inventory } = setup);
  });
  after(async () => {
    await setup[Symbol.asyncDispose]();
    nix[Symbol.dispose]();
    rmSync(work, { recursive: true, force: true });
  });

  /** ssh connections the builders' sshd accepted so far (sessions on a master are not). */
  const handshakes = (): number =>
    fleet.hosts
      .map(
        (host) =>
          (readFileSync(host.path('sshd.log'), 'utf8').match(/Accepted publickey/g) ?? []).length,
      )
      .reduce((a, b) => a + b, 0);
  /** ssh control masters of this fleet still running. */
  const masters = (): number =>
    spawnSync('pgrep', ['-f', `-F ${fleet.sshConfig} .*ControlMaster=yes`])
      .stdout.toString('utf8')
      .split('\n')
      .filter(Boolean).length;

  /** `firn build` of the Nix file `file` on this fleet, with its own duration history. */
  const buildArgs = (file: string, history: string, extra: readonly string[] = []): string[] => [
    'build',
    '--fleet',
    inventory,
    '--store',
    store,
    '--history',
    join(work, history),
    '-f',
    file,
    ...extra,
  ];
  const build = (expr: string, extra: readonly string[] = [], env: NodeJS.ProcessEnv = {}) => {
    const file = join(work, `${randomUUID()}.nix`);
    writeFileSync(file, expr);
    return firn(buildArgs(file, 'durations.sqlite', extra), { env: { ...nix.env, ...env } });
  };

  test('the board graph: each derivation once, on a board, every output in the cache', async () => {
    const salt = randomUUID();
    const handshakesBefore = handshakes();
    const result = await build(boardExpr(salt), ['--json']);
    assert.equal(result.code, 0, result.stderr);
    // One multiplexed ssh connection per builder carried every session (serve connections,
    // source copies, pushes), and none is left once firn build has exited.
    assert.equal(handshakes() - handshakesBefore, 3);
    assert.equal(masters(), 0);
    const all = events(result.stdout);
    const starts = all.filter((e) => e.event === 'start');
    const built = all.filter((e) => e.event === 'built');
    assert.equal(built.length, 15, result.stderr);
    assert.equal(new Set(built.map((e) => e.drvPath)).size, 15, 'each derivation built once');
    assert.equal(
      starts.length,
      15,
      `no derivation started twice: ${JSON.stringify(all.filter((e) => e.event !== 'start' && e.event !== 'built'))}`,
    );
    for (const e of built) assert.ok(BOARDS.includes(e.builder ?? ''), `built on ${e.builder}`);
    // The critical path goes first: config starts before any package.
    assert.equal(starts[0]?.name, 'config');
    // Pipelining: the kernel starts where config was built as soon as config's output is
    // valid there, before config's push to the cache is confirmed (config "built").
    const at = (event: string, name: string): number =>
      all.findIndex((e) => e.event === event && e.name === name);
    assert.ok(at('start', 'kernel-6.1') < at('built', 'config'), 'kernel pipelined on config');
    assert.equal(all[at('start', 'kernel-6.1')]?.builder, all[at('built', 'config')]?.builder);
    assert.ok(at('built', 'config') < at('built', 'kernel-6.1'), 'done in dependency order');
    const done = all.at(-1) ?? assert.fail('no events');
    assert.equal(done.event, 'done');
    const outputs = done.outputs as string[];
    assert.equal(outputs.length, 13);
    const wall = done.wallSeconds as number;
    // Lower bound 2 s of sleeping; ssh, substitution and pushes add a little per step.
    assert.ok(wall < 20, `wall time ${wall} s`);

    // Every output substitutes into a fresh store from the cache alone.
    using fresh = makeNixEnv(
      `substituters = ${server.url}\ntrusted-public-keys = ${await server.publicKey()}`,
    );
    const freshStore = join(fresh.dir, 'fresh');
    const realised = await fresh.nixRaw('nix-store', [
      '--store',
      freshStore,
      '--realise',
      ...outputs,
    ]);
    assert.equal(realised.code, 0, realised.stderr);
    assert.equal(readFileSync(join(freshStore, outputs[0] ?? ''), 'utf8'), `modules ${salt}\n`);

    // A second run finds everything in the cache and builds nothing.
    const again = await build(boardExpr(salt));
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /built 0, 13 already in the cache/);
    assert.deepEqual(again.stdout.toString('utf8').trim().split('\n'), outputs);
  });

  test('three boards whose systems share kernel and packages: shared ones built once', async () => {
    const salt = randomUUID();
    const expr = `
let
  mk = name: extra: derivation ({
    inherit name; salt = "${salt}"; system = "aarch64-linux"; builder = "/bin/sh";
    args = [ "-c" "echo $name > $out" ]; PATH = "/bin:/usr/bin";
  } // extra);
  kernel = mk "shared-kernel" {};
  pkg = mk "shared-pkg" {};
  system = board: mk "system-\${board}" { inherit kernel pkg; };
in { opi01 = system "opi01"; opi02 = system "opi02"; opi03 = system "opi03"; }
`;
    const result = await build(expr, ['--json']);
    assert.equal(result.code, 0, result.stderr);
    const built = events(result.stdout).filter((e) => e.event === 'built');
    const count = (name: string): number => built.filter((e) => e.name === name).length;
    assert.equal(count('shared-kernel'), 1);
    assert.equal(count('shared-pkg'), 1);
    for (const board of BOARDS) assert.equal(count(`system-${board}`), 1);
    assert.equal(built.length, 5);
  });

  test('a failing derivation: dependents not built, independent ones built, log tail', async () => {
    const token = await server.token('push');
    const result = await build(failureExpr(randomUUID()), [], { FIRN_TOKEN: token });
    assert.equal(result.code, 1, result.stderr);
    const stderr = result.stderr;
    assert.match(stderr, /\] built ok in/);
    assert.match(stderr, /\] built needs-ok in/);
    assert.doesNotMatch(stderr, /\] building child/);
    assert.match(stderr, /not building child: it depends on bad, which failed/);
    assert.match(stderr, /error: \/nix\/store\/\w{32}-bad\.drv failed on opi0\d: PermanentFailure/);
    assert.match(stderr, /boom-from-bad/);
    assert.match(stderr, /FIRN_E_BUILD_FAILED/);
    assert.equal(result.stdout.toString('utf8'), '', 'no output paths on failure');
    // The whole log went to the cache's /log/.
    const logUrl = /full log: (\S+)/.exec(stderr)?.[1] ?? assert.fail(`no log URL in ${stderr}`);
    assert.match(logUrl, /\/log\/\w{32}-bad\.drv$/);
    const log = await fetch(logUrl);
    assert.equal(log.status, 200);
    assert.match(await log.text(), /boom-from-bad\nsecond line/);
  });

  test('a derivation no builder can take is refused before anything is built', async () => {
    const expr = `derivation { name = "rv"; system = "riscv64-linux"; builder = "/bin/sh"; salt = "${randomUUID()}"; }`;
    const result = await build(expr);
    assert.equal(result.code, 69, result.stderr);
    assert.match(result.stderr, /rv\.drv needs a riscv64-linux builder/);
    assert.match(result.stderr, /FIRN_E_BUILD_NO_BUILDER/);
    assert.doesNotMatch(result.stderr, /building/);
  });

  test('Ctrl-C: remote builds are killed and nothing is left running', async () => {
    const salt = randomUUID();
    const file = join(work, 'cancel.nix');
    writeFileSync(
      file,
      `derivation { name = "long"; salt = "${salt}"; system = "aarch64-linux"; builder = "/bin/sh";
         args = [ "-c" "sleep 31.4159; echo > $out" ]; PATH = "/bin:/usr/bin"; }`,
    );
    const child = spawn(FIRN_BIN, buildArgs(file, 'cancel.sqlite'), {
      env: nix.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    const started = new Promise<void>((resolve) => {
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
        if (stderr.includes('building long')) resolve();
      });
    });
    await started;
    // Let the remote build actually start sleeping.
    await waitFor(() => sleepers() > 0, 5000);
    assert.ok(sleepers() > 0, 'the remote build is running');
    const t0 = Date.now();
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.notEqual(code, 0);
    assert.ok(Date.now() - t0 < 5000, 'cancelling is quick');
    assert.match(stderr, /cancelled/);
    await waitFor(() => sleepers() === 0, 5000);
    assert.equal(sleepers(), 0, 'the remote build was killed');
    assert.equal(masters(), 0, 'the ssh masters were closed');
  });

  test('a push that fails fails its derivation and stops what was pipelined on it', async (t) => {
    // opi01 alone, with a token the cache refuses: its builds succeed, its pushes fail.
    const only = fleet.writeInventory(join(work, 'only-opi01.toml'), {
      hosts: {
        opi01: { systems: ['aarch64-linux'], 'max-jobs': 2 },
        opi02: false,
        opi03: false,
      },
    });
    const netrc = fleet.host('opi01').path('conf', 'netrc');
    const good = readFileSync(netrc, 'utf8');
    writeFileSync(netrc, `machine ${fleet.gateway} login firn password not-a-token\n`);
    t.after(() => {
      writeFileSync(netrc, good);
    });
    const salt = randomUUID();
    const file = join(work, 'push-fails.nix');
    writeFileSync(
      file,
      `let mk = name: script: extra: derivation ({ inherit name; salt = "${salt}";
             system = "aarch64-linux"; builder = "/bin/sh"; args = [ "-c" script ];
             PATH = "/bin:/usr/bin"; } // extra);
           lib = mk "lib" "sleep 0.2; echo lib > $out" {};
       in { app = mk "app" "sleep 27.1828; echo app > $out" { inherit lib; }; }`,
    );
    const result = await firn(
      ['build', '--fleet', only, '--store', store, '--history', join(work, 'push.sqlite')].concat([
        '-f',
        file,
        '--json',
      ]),
      { env: nix.env },
    );
    assert.equal(result.code, 1, result.stderr);
    const all = events(result.stdout);
    const of = (name: string) => all.filter((e) => e.name === name).map((e) => e.event);
    assert.deepEqual(of('lib'), ['start', 'failed']);
    // app started on lib's output before lib's push failed, and was then stopped: not built.
    assert.deepEqual(of('app'), ['start', 'skipped']);
    const failure = all.find((e) => e.event === 'failed');
    assert.match(String(failure?.message), /pushing the outputs to .* failed 3 times/);
    await waitFor(() => appSleepers() === 0, 5000);
    assert.equal(appSleepers(), 0, "app's remote build was killed");
    const done = all.at(-1);
    assert.deepEqual(done?.skipped, [all.find((e) => e.name === 'app')?.drvPath]);
  });

  test('a builder killed mid-build: the build completes on the others', async () => {
    const salt = randomUUID();
    const file = join(work, 'kill.nix');
    writeFileSync(
      file,
      `let mk = i: derivation { name = "slow\${toString i}"; salt = "${salt}"; system = "aarch64-linux";
         builder = "/bin/sh"; args = [ "-c" "sleep 1.5; echo done > $out" ]; PATH = "/bin:/usr/bin"; };
       in builtins.listToAttrs (map (i: { name = "s\${toString i}"; value = mk i; }) [ 1 2 3 4 5 6 ])`,
    );
    const victim = fleet.host('opi03');
    const child = spawn(FIRN_BIN, buildArgs(file, 'kill.sqlite', ['--json']), {
      env: nix.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let killed = false;
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (!killed && /"event":"start"[^\n]*"builder":"opi03"/.test(stdout)) {
        killed = true;
        setTimeout(() => {
          victim.kill();
        }, 300);
      }
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.ok(killed, 'opi03 got a build');
    assert.equal(code, 0, stderr);
    const all = events(Buffer.from(stdout));
    const built = all.filter((e) => e.event === 'built');
    assert.equal(built.length, 6);
    assert.ok(
      built.every((e) => e.builder !== 'opi03'),
      'nothing finished on the dead host',
    );
    assert.ok(all.some((e) => e.event === 'requeued' && e.builder === 'opi03'));
    assert.ok(all.some((e) => e.event === 'builder-down' && e.builder === 'opi03'));
  });
});

/** Processes of the cancel test's remote build (the hosts share this machine's PID space). */
function sleepers(): number {
  const result = spawnSync('pgrep', ['-f', 'sleep 31.4159']);
  return result.stdout.toString('utf8').trim().split('\n').filter(Boolean).length;
}

function appSleepers(): number {
  const result = spawnSync('pgrep', ['-f', 'sleep 27.1828']);
  return result.stdout.toString('utf8').trim().split('\n').filter(Boolean).length;
}

async function waitFor(condition: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

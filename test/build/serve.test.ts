/**
 * The serve-protocol client against the real `nix-store --serve --write` (Nix 2.8) run locally
 * on a chroot store: handshake, QueryValidPaths, BuildDerivation of a derivation read with our
 * parser and sent inline, a failing build's status and message, and a peer that dies.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ServeConnection, basicDerivation } from '../../src/build/serve-client.ts';
import { FirnError } from '../../src/errors.ts';
import { parseDerivation } from '../../src/nix/derivation.ts';
import { makeNixEnv } from '../helpers/nix.ts';

const EXPR = `
let script = builtins.toFile "script.sh" "echo built-by-serve > $out"; in {
  good = derivation { name = "serve-good"; system = "aarch64-linux"; builder = "/bin/sh"; args = [ script ]; };
  bad = derivation { name = "serve-bad"; system = "aarch64-linux"; builder = "/bin/sh";
                     args = [ "-c" "echo about to fail >&2; exit 3" ]; };
}`;

function setup(t: { after(fn: () => void): void }) {
  const nix = makeNixEnv();
  t.after(() => {
    nix[Symbol.dispose]();
  });
  const store = join(nix.dir, 'store');
  const env = {
    ...nix.env,
    NIX_CONFIG: 'extra-platforms = aarch64-linux\nsandbox-paths = /bin /lib /lib64 /usr',
  };
  const instantiate = async (attr: string): Promise<string> => {
    const result = await nix.nix('nix-instantiate', ['--store', store, '-E', EXPR, '-A', attr]);
    return result.stdout.toString('utf8').trim();
  };
  const open = (): Promise<ServeConnection> =>
    ServeConnection.open(['nix-store', '--serve', '--write', '--store', store], {
      label: 'local',
      env,
    });
  return { store, env, instantiate, open };
}

test('handshake, query and build against nix-store --serve --write', async (t) => {
  const { store, instantiate, open } = setup(t);
  const drvPath = await instantiate('good');
  const drv = parseDerivation(readFileSync(join(store, drvPath)));
  const out = drv.outputs.get('out')?.path ?? assert.fail('no out');
  const connection = await open();
  t.after(() => {
    connection.close();
  });
  assert.equal(connection.serverVersion, 0x207);
  const [script] = drv.inputSrcs;
  assert.deepEqual(await connection.queryValidPaths([out, script ?? '']), [script]);
  const result = await connection.buildDerivation(drvPath, drv);
  assert.equal(result.statusName, 'Built');
  assert.equal(result.timesBuilt, 1);
  assert.ok(result.stopTime >= result.startTime && result.startTime > 1_600_000_000);
  assert.equal(readFileSync(join(store, out), 'utf8'), 'built-by-serve\n');
  // The same connection takes the next command; a second build finds the output valid.
  assert.deepEqual(await connection.queryValidPaths([out]), [out]);
  assert.equal((await connection.buildDerivation(drvPath, drv)).statusName, 'AlreadyValid');
});

test('a failing build reports its status, a clean message and the log', async (t) => {
  const { store, instantiate, open } = setup(t);
  const drvPath = await instantiate('bad');
  const drv = parseDerivation(readFileSync(join(store, drvPath)));
  const connection = await open();
  t.after(() => {
    connection.close();
  });
  const result = await connection.buildDerivation(drvPath, drv);
  assert.equal(result.statusName, 'PermanentFailure');
  assert.match(result.errorMsg, /builder for '.*serve-bad\.drv' failed with exit code 3/);
  assert.ok(!result.errorMsg.includes('\x1b'));
  assert.match(connection.takeLog(), /about to fail/);
  assert.deepEqual(await connection.queryValidPaths([]), []);
});

test("a failed build's log is whole even when its end arrives after the result", async (t) => {
  const { store, env, instantiate } = setup(t);
  const drvPath = await instantiate('bad');
  const drv = parseDerivation(readFileSync(join(store, drvPath)));
  // The peer's stderr goes through a relay that holds every piece back 15 ms, as a busy ssh
  // client may: the build result (stdout) is read before the end of the log.
  const relay = `process.stdin.on('data', (d) => setTimeout(() => process.stderr.write(d), 15))`;
  const connection = await ServeConnection.open(
    [
      'bash',
      '-c',
      `exec nix-store --serve --write --store "$0" 2> >(exec "$1" -e "$2" >&2)`,
      store,
      process.execPath,
      relay,
    ],
    { label: 'slow-stderr', env },
  );
  t.after(() => {
    connection.close();
  });
  const result = await connection.buildDerivation(drvPath, drv);
  assert.equal(result.statusName, 'PermanentFailure');
  assert.match(await connection.takeSettledLog(), /about to fail/);
});

test('a peer that is not nix-store --serve, or that dies, is FIRN_E_BUILDER_PROTOCOL', async () => {
  await assert.rejects(
    ServeConnection.open(['sh', '-c', 'echo nope >&2; exit 1'], { label: 'dead' }),
    (error: unknown) =>
      FirnError.is(error) &&
      error.code === 'FIRN_E_BUILDER_PROTOCOL' &&
      error.message.includes('builder dead') &&
      error.message.includes('nope'),
  );
  await assert.rejects(
    ServeConnection.open(['head', '-c', '0'], { label: 'silent' }),
    (error: unknown) => FirnError.is(error) && error.code === 'FIRN_E_BUILDER_PROTOCOL',
  );
});

test('basicDerivation lays out outputs, sources, platform, builder, args and env', () => {
  const bytes = basicDerivation({
    outputs: new Map([['out', { path: '/nix/store/x-o', hashAlgo: '', hash: '' }]]),
    inputDrvs: new Map(),
    inputSrcs: ['/nix/store/y-s'],
    system: 'aarch64-linux',
    builder: '/bin/sh',
    args: ['-c'],
    env: new Map([['a', 'b']]),
  });
  // 1 output: count, name "out", path, "", "" — each string 8-byte padded.
  assert.equal(bytes.readBigUInt64LE(0), 1n);
  assert.equal(bytes.readBigUInt64LE(8), 3n);
  assert.equal(bytes.subarray(16, 19).toString(), 'out');
  assert.equal(bytes.length % 8, 0);
  assert.ok(bytes.includes(Buffer.from('aarch64-linux\0\0\0')));
});

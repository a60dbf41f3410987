import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { FirnError } from '../errors.ts';
import { defaultNetrcFile, loadPushConfig, parseMs } from './push-config.ts';

function configFile(t: TestContext, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'firn-push-config-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const file = join(dir, 'firn.toml');
  writeFileSync(file, text);
  return file;
}

test('defaults', async () => {
  const config = await loadPushConfig({
    env: { HOME: '/home/u', XDG_STATE_HOME: '/state' },
    flags: {},
  });
  assert.equal(config.cache, undefined);
  assert.equal(config.compression, 'zstd');
  assert.equal(config.compressionLevel, 3);
  assert.equal(config.jobs, 4);
  assert.deepEqual(config.upstreams, []);
  assert.equal(config.retries, 5);
  assert.equal(config.retryDelayMs, 250);
  assert.equal(config.store, '/');
  assert.equal(config.netrcFile, '/etc/nix/netrc');
  assert.equal(config.spool, process.getuid?.() === 0 ? '/var/spool/firn' : '/state/firn/spool');
});

test('flags win over the environment, which wins over the [push] table of the file', async (t) => {
  const file = configFile(
    t,
    '[serve]\nlisten = "0.0.0.0:5000"\n\n[push]\ncache = "http://file:1"\njobs = 2\nspool = "/file/spool"\nupstreams = ["https://up.example"]\nretry-delay = "1s"\n',
  );
  const fromFile = await loadPushConfig({ file, env: {}, flags: {} });
  assert.equal(fromFile.cache, 'http://file:1');
  assert.equal(fromFile.jobs, 2);
  assert.equal(fromFile.spool, '/file/spool');
  assert.deepEqual(fromFile.upstreams, ['https://up.example']);
  assert.equal(fromFile.retryDelayMs, 1000);
  const env = {
    FIRN_CACHE: 'http://env:2',
    FIRN_PUSH_JOBS: '8',
    FIRN_UPSTREAMS: 'https://a, https://b',
  };
  const fromEnv = await loadPushConfig({ file, env, flags: {} });
  assert.equal(fromEnv.cache, 'http://env:2');
  assert.equal(fromEnv.jobs, 8);
  assert.deepEqual(fromEnv.upstreams, ['https://a', 'https://b']);
  const fromFlags = await loadPushConfig({
    file,
    env,
    flags: { cache: 'http://flag:3', jobs: '16', upstreams: ['https://c'], 'retry-delay': '50ms' },
  });
  assert.equal(fromFlags.cache, 'http://flag:3');
  assert.equal(fromFlags.jobs, 16);
  assert.deepEqual(fromFlags.upstreams, ['https://c']);
  assert.equal(fromFlags.retryDelayMs, 50);
});

test('a file of bare keys is the push table; a file of other tables is not', async (t) => {
  const bare = configFile(t, 'cache = "http://bare:1"\ncompression = "none"\n');
  assert.equal((await loadPushConfig({ file: bare, env: {}, flags: {} })).compression, 'none');
  const serveOnly = configFile(t, '[serve]\nlisten = "0.0.0.0:1"\n');
  assert.equal((await loadPushConfig({ file: serveOnly, env: {}, flags: {} })).cache, undefined);
});

test('bad values are FIRN_E_CONFIG_INVALID naming the key', async (t) => {
  const cases: Record<string, string>[] = [
    { jobs: '0' },
    { compression: 'xz' },
    { 'retry-delay': 'soon' },
    { 'path-info': 'guess' },
  ];
  for (const flags of cases) {
    await assert.rejects(
      loadPushConfig({ env: {}, flags }),
      (error: unknown) =>
        FirnError.is(error) &&
        error.code === 'FIRN_E_CONFIG_INVALID' &&
        error.message.includes(Object.keys(flags)[0] ?? ''),
    );
  }
  const unknownKey = configFile(t, '[push]\ncahce = "http://typo"\n');
  await assert.rejects(loadPushConfig({ file: unknownKey, env: {}, flags: {} }), /cahce/);
});

test('durations and the netrc default follow NIX_CONF_DIR', () => {
  assert.equal(parseMs('250ms'), 250);
  assert.equal(parseMs('1.5s'), 1500);
  assert.equal(parseMs('2m'), 120_000);
  assert.equal(parseMs('40'), 40);
  assert.equal(parseMs('fast'), undefined);
  assert.equal(defaultNetrcFile({ NIX_CONF_DIR: '/conf' }), '/conf/netrc');
});

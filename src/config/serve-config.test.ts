import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { FirnError, type ErrorCode } from '../errors.ts';
import { defaultDataDir, loadServeConfig, parseListen } from './serve-config.ts';
import { formatBytes, parseDuration, parseSize } from './sizes.ts';

const dir = mkdtempSync(join(tmpdir(), 'firn-config-'));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

let fileCounter = 0;
function configFile(text: string): string {
  const file = join(dir, `serve-${++fileCounter}.toml`);
  writeFileSync(file, text);
  return file;
}

function failsWith(code: ErrorCode, message?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(FirnError.is(error), String(error));
    assert.equal(error.code, code);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  };
}

describe('loadServeConfig', () => {
  test('defaults', async () => {
    const config = await loadServeConfig({ env: { HOME: '/home/u' }, flags: {} });
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.port, 5000);
    assert.equal(config.storeDir, '/nix/store');
    assert.equal(config.priority, 30);
    assert.equal(config.wantMassQuery, true);
    assert.equal(config.requireReferences, true);
    assert.equal(config.private, false);
    assert.equal(config.maxNarSize, 64 * 1024 ** 3);
    assert.equal(config.keyName, `${hostname()}-1`);
    assert.equal(config.dataDir, defaultDataDir({ HOME: '/home/u' }));
    assert.ok(Object.isFrozen(config));
  });

  test('file < environment < flags, key by key', async () => {
    const file = configFile(
      [
        'listen = "127.0.0.1:6001"',
        'priority = 10',
        'key-name = "from-file-1"',
        'private = true',
        'max-nar-size = "1G"',
        'data = "/from/file"',
      ].join('\n'),
    );
    const env = { FIRN_LISTEN: '127.0.0.1:6002', FIRN_PRIORITY: '20', FIRN_PRIVATE: 'no' };
    const fromFile = await loadServeConfig({ file, env: {}, flags: {} });
    assert.equal(fromFile.port, 6001);
    assert.equal(fromFile.priority, 10);
    assert.equal(fromFile.private, true);
    assert.equal(fromFile.maxNarSize, 1024 ** 3);
    assert.equal(fromFile.dataDir, '/from/file');

    const withEnv = await loadServeConfig({ file, env, flags: {} });
    assert.equal(withEnv.port, 6002);
    assert.equal(withEnv.priority, 20);
    assert.equal(withEnv.private, false);
    assert.equal(withEnv.keyName, 'from-file-1', 'what the environment does not set stays');

    const withFlags = await loadServeConfig({
      file,
      env,
      flags: { listen: '[::1]:6003', priority: '5', private: true, data: undefined },
    });
    assert.equal(withFlags.host, '::1');
    assert.equal(withFlags.port, 6003);
    assert.equal(withFlags.priority, 5);
    assert.equal(withFlags.private, true);
    assert.equal(withFlags.dataDir, '/from/file', 'an undefined flag does not override');
  });

  test('a [serve] table is read like a bare file', async () => {
    const file = configFile('[serve]\npriority = 7\nwant-mass-query = false\n');
    const config = await loadServeConfig({ file, env: {}, flags: {} });
    assert.equal(config.priority, 7);
    assert.equal(config.wantMassQuery, false);
  });

  test('empty environment variables are ignored; FIRN_DATA and XDG_STATE_HOME pick the data dir', async () => {
    const empty = await loadServeConfig({ env: { FIRN_LISTEN: '', HOME: '/h' }, flags: {} });
    assert.equal(empty.port, 5000);
    const data = await loadServeConfig({ env: { FIRN_DATA: '/srv/firn' }, flags: {} });
    assert.equal(data.dataDir, '/srv/firn');
    assert.equal(defaultDataDir({ XDG_STATE_HOME: '/state' }), '/state/firn');
  });

  test('the store dir loses trailing slashes', async () => {
    const config = await loadServeConfig({ env: { FIRN_STORE_DIR: '/gnu/store//' }, flags: {} });
    assert.equal(config.storeDir, '/gnu/store');
  });

  test('unknown keys are refused with FIRN_E_CONFIG_INVALID naming them', async () => {
    const file = configFile('listen = "127.0.0.1:5000"\nlisten-port = 5000\n');
    await assert.rejects(
      loadServeConfig({ file, env: {}, flags: {} }),
      failsWith('FIRN_E_CONFIG_INVALID', /listen-port/),
    );
    const table = configFile('[serve]\nmaxNarSize = "1G"\n');
    await assert.rejects(
      loadServeConfig({ file: table, env: {}, flags: {} }),
      failsWith('FIRN_E_CONFIG_INVALID', /maxNarSize/),
    );
  });

  test('values of the wrong type are FIRN_E_CONFIG_INVALID naming the key', async () => {
    const cases: [string, RegExp][] = [
      ['priority = "high"', /priority/],
      ['priority = 5000', /priority/],
      ['private = "maybe"', /private/],
      ['key-name = "has space"', /key-name/],
      ['log-level = "loud"', /log-level/],
    ];
    for (const [line, message] of cases) {
      await assert.rejects(
        loadServeConfig({ file: configFile(line), env: {}, flags: {} }),
        failsWith('FIRN_E_CONFIG_INVALID', message),
        line,
      );
    }
    await assert.rejects(
      loadServeConfig({ env: { FIRN_PRIORITY: 'abc' }, flags: {} }),
      failsWith('FIRN_E_CONFIG_INVALID', /priority/),
    );
  });

  test('sizes: numbers or strings with units; a bad size is FIRN_E_CONFIG_INVALID', async () => {
    const number = await loadServeConfig({
      file: configFile('max-nar-size = 1024'),
      env: {},
      flags: {},
    });
    assert.equal(number.maxNarSize, 1024);
    const env = await loadServeConfig({ env: { FIRN_MAX_NAR_SIZE: '512MiB' }, flags: {} });
    assert.equal(env.maxNarSize, 512 * 1024 ** 2);
    await assert.rejects(
      loadServeConfig({ file: configFile('max-nar-size = "lots"'), env: {}, flags: {} }),
      failsWith('FIRN_E_CONFIG_INVALID', /max-nar-size/),
    );
    await assert.rejects(
      loadServeConfig({ env: { FIRN_MAX_NAR_SIZE: '-5G' }, flags: {} }),
      failsWith('FIRN_E_CONFIG_INVALID', /max-nar-size/),
    );
  });

  test('a bad listen address is FIRN_E_CONFIG_INVALID with a hint', async () => {
    for (const listen of [
      '5000',
      'localhost',
      '127.0.0.1:',
      '127.0.0.1:99999',
      '::1:5000',
      'a:b',
    ]) {
      await assert.rejects(
        loadServeConfig({ env: {}, flags: { listen } }),
        (error: unknown) =>
          failsWith('FIRN_E_CONFIG_INVALID', /listen/)(error) &&
          FirnError.is(error) &&
          error.hint !== undefined,
        listen,
      );
    }
  });

  test('a missing config file is FIRN_E_FILE_NOT_FOUND; bad TOML is FIRN_E_CONFIG_INVALID', async () => {
    await assert.rejects(
      loadServeConfig({ file: join(dir, 'absent.toml'), env: {}, flags: {} }),
      failsWith('FIRN_E_FILE_NOT_FOUND'),
    );
    await assert.rejects(
      loadServeConfig({ file: configFile('listen = '), env: {}, flags: {} }),
      failsWith('FIRN_E_CONFIG_INVALID', /serve-\d+\.toml/),
    );
  });
});

describe('parseListen', () => {
  test('host and port forms', () => {
    assert.deepEqual(parseListen('127.0.0.1:5000'), { host: '127.0.0.1', port: 5000 });
    assert.deepEqual(parseListen('0.0.0.0:80'), { host: '0.0.0.0', port: 80 });
    assert.deepEqual(parseListen(':5000'), { host: '0.0.0.0', port: 5000 });
    assert.deepEqual(parseListen('[::]:5000'), { host: '::', port: 5000 });
    assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
    assert.deepEqual(parseListen('cache.lan:5000'), { host: 'cache.lan', port: 5000 });
  });
});

describe('sizes and durations', () => {
  test('parseSize knows binary and decimal units', () => {
    assert.equal(parseSize('0'), 0);
    assert.equal(parseSize('10'), 10);
    assert.equal(parseSize('1k'), 1024);
    assert.equal(parseSize('1KB'), 1000);
    assert.equal(parseSize('1.5G'), 1.5 * 1024 ** 3);
    assert.equal(parseSize('2 TiB'), 2 * 1024 ** 4);
    assert.equal(parseSize('200GB'), 200 * 1000 ** 3);
    for (const bad of ['', 'G', '1X', '-1G', '1e3', '1 G B']) {
      assert.throws(() => parseSize(bad), failsWith('FIRN_E_USAGE'), bad);
    }
  });

  test('parseDuration', () => {
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('12h'), 12 * 3_600_000);
    assert.equal(parseDuration('30d'), 30 * 86_400_000);
    assert.equal(parseDuration('2w'), 14 * 86_400_000);
    for (const bad of ['30', 'd', '1y', '-1d']) {
      assert.throws(() => parseDuration(bad), failsWith('FIRN_E_USAGE'), bad);
    }
  });

  test('formatBytes', () => {
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(1023), '1023 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(5 * 1024 ** 3), '5.0 GiB');
  });
});

/**
 * The cache's command line, run as a user would: `firn cache token|key|gc|verify` and
 * `firn serve`'s banner and shutdown, against a real data directory and a running server.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { hashToken } from '../../src/cache/tokens.ts';
import { firn, FIRN_BIN } from '../helpers/firn.ts';
import { freePort, startTestServer, type TestServer } from '../helpers/server.ts';
import { bearer, makeFixture, put, upload, type Fixture } from './upload-fixtures.ts';

function tempDir(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

async function serverFor(t: TestContext, args: readonly string[] = []): Promise<TestServer> {
  const server = await startTestServer({ args });
  t.after(() => server[Symbol.asyncDispose]());
  return server;
}

/** `promise`'s value, or 'timed out' after `ms`. */
async function within<T>(ms: number, promise: Promise<T>): Promise<T | 'timed out'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timed out'>((resolve) => {
    timer = setTimeout(() => {
      resolve('timed out');
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function text(buffer: Buffer): string {
  return buffer.toString('utf8');
}

describe('firn cache token', () => {
  test('a --data with no cache: list and revoke refuse it; create says it made a new index', async (t) => {
    const parent = tempDir(t, 'firn-token-typo-');
    const typo = join(parent, 'firn-dtaa');
    for (const args of [['list'], ['revoke', 'builder1']]) {
      const result = await firn(['cache', 'token', ...args, '--data', typo]);
      assert.equal(result.code, 66, result.stderr);
      assert.match(result.stderr, /FIRN_E_FILE_NOT_FOUND/);
      assert.match(result.stderr, /there is no firn cache in .*firn-dtaa/);
      assert.equal(existsSync(typo), false, `${args[0] ?? ''} must not create the directory`);
    }
    const created = await firn([
      'cache',
      'token',
      'create',
      '--data',
      typo,
      '--name',
      'early',
      '--scope',
      'push',
    ]);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stderr, /note: there was no cache in .*firn-dtaa; made its index there/);
    const again = await firn([
      'cache',
      'token',
      'create',
      '--data',
      typo,
      '--name',
      'later',
      '--scope',
      'push',
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stderr, /note:/);
  });

  test('create prints the token once, as the last line; list never shows it; revoke locks it out', async (t) => {
    const server = await serverFor(t);
    const data = server.dataDir;
    const created = await firn([
      'cache',
      'token',
      'create',
      '--data',
      data,
      '--name',
      'builder1',
      '--scope',
      'push',
    ]);
    assert.equal(created.code, 0, created.stderr);
    const lines = text(created.stdout).trimEnd().split('\n');
    assert.equal(lines.length, 1, 'stdout is the token alone, for scripts');
    const token = lines.at(-1) ?? '';
    assert.match(token, /^firn_[A-Za-z0-9_-]{40,}$/);
    assert.match(
      created.stderr,
      /created push token 'builder1' \(id [0-9a-f]+\); it is shown only now/,
    );

    const json = await firn([
      'cache',
      'token',
      'create',
      '--data',
      data,
      '--name',
      'reader',
      '--scope',
      'read',
      '--json',
    ]);
    assert.equal(json.code, 0, json.stderr);
    const made = JSON.parse(text(json.stdout)) as {
      id: string;
      name: string;
      scope: string;
      token: string;
    };
    assert.equal(made.scope, 'read');
    assert.match(made.token, /^firn_/);

    for (const args of [[], ['--json']]) {
      const listed = await firn(['cache', 'token', 'list', '--data', data, ...args]);
      assert.equal(listed.code, 0, listed.stderr);
      const out = text(listed.stdout) + listed.stderr;
      assert.match(out, /builder1/);
      assert.match(out, /reader/);
      for (const secret of [token, made.token, hashToken(token), hashToken(made.token)]) {
        assert.ok(!out.includes(secret), 'token list shows a secret');
      }
    }

    const fixture = makeFixture();
    assert.equal((await upload(server.url, token, fixture)).narinfo, 201);
    const listed = await firn(['cache', 'token', 'list', '--data', data]);
    assert.match(text(listed.stdout), /builder1 .* push +created .*, last used \d{4}-/);

    const revoked = await firn(['cache', 'token', 'revoke', '--data', data, 'builder1']);
    assert.equal(revoked.code, 0, revoked.stderr);
    const refused = await put(server.url, `/nar/${makeFixture().fileName}`, 'x', token);
    assert.equal(refused.status, 401);
    assert.match(await refused.text(), /not valid \(unknown or revoked\) \[FIRN_E_AUTH_REQUIRED\]/);
    const byId = await firn(['cache', 'token', 'revoke', '--data', data, made.id]);
    assert.equal(byId.code, 0, byId.stderr);
    const read = await fetch(`${server.url}/api/v1/stats`, { headers: bearer(made.token) });
    assert.equal(read.status, 200, 'a public cache still serves reads without a valid token');
    const left = await firn(['cache', 'token', 'list', '--data', data, '--json']);
    assert.deepEqual(JSON.parse(text(left.stdout)), []);
  });

  test('mistakes are refused with a code and an exit status', async (t) => {
    const data = tempDir(t, 'firn-cli-tokens-');
    const ok = await firn([
      'cache',
      'token',
      'create',
      '--data',
      data,
      '--name',
      'dup',
      '--scope',
      'admin',
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    const cases: [string[], number, string][] = [
      [['create', '--name', 'dup', '--scope', 'push'], 73, 'FIRN_E_FILE_EXISTS'],
      [['create', '--name', 'x', '--scope', 'root'], 2, 'FIRN_E_USAGE'],
      [['create', '--scope', 'push'], 2, 'FIRN_E_USAGE'],
      [['create', '--name', 'has space', '--scope', 'push'], 2, 'FIRN_E_USAGE'],
      [['revoke', 'nobody'], 66, 'FIRN_E_TOKEN_UNKNOWN'],
      [['revoke'], 2, 'FIRN_E_USAGE'],
      [['frobnicate'], 2, 'FIRN_E_UNKNOWN_COMMAND'],
    ];
    for (const [args, code, error] of cases) {
      const [sub = '', ...rest] = args;
      const result = await firn(['cache', 'token', sub, '--data', data, ...rest]);
      assert.equal(result.code, code, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, new RegExp(`\\[${error}\\]`));
    }
  });
});

describe('firn cache key', () => {
  test('before the first serve: FIRN_E_FILE_NOT_FOUND with a hint; after: the key, secret 0600', async (t) => {
    const data = tempDir(t, 'firn-cli-key-');
    const before = await firn(['cache', 'key', '--data', data]);
    assert.equal(before.code, 66);
    assert.match(before.stderr, /the cache has no key yet: .* \[FIRN_E_FILE_NOT_FOUND\]/);
    assert.match(
      before.stderr,
      new RegExp(`hint: start the cache once \\(firn serve --data ${data}\\)`),
    );

    const server = await startTestServer({ dataDir: data });
    t.after(() => server.kill());
    const key = await firn(['cache', 'key', '--data', data]);
    assert.equal(key.code, 0, key.stderr);
    assert.match(text(key.stdout), /^test-cache-1:[A-Za-z0-9+/]{43}=\n$/);
    const stats = (await (await fetch(`${server.url}/api/v1/stats`)).json()) as {
      publicKey: string;
    };
    assert.equal(text(key.stdout).trim(), stats.publicKey);
    const fromEnv = await firn(['cache', 'key'], { env: { FIRN_DATA: data } });
    assert.equal(text(fromEnv.stdout), text(key.stdout));

    const secret = join(data, 'keys', 'cache.secret');
    assert.equal(statSync(secret).mode & 0o777, 0o600);
    assert.equal(statSync(join(data, 'keys')).mode & 0o777, 0o700);
    assert.equal(readFileSync(join(data, 'keys', 'cache.public'), 'utf8'), text(key.stdout));

    // A secret key left readable by others is tightened on the next start, and kept.
    await server.kill();
    chmodSync(secret, 0o644);
    const again = await startTestServer({ dataDir: data });
    t.after(() => again.kill());
    assert.equal(statSync(secret).mode & 0o777, 0o600);
    // The log is written asynchronously: give it a moment.
    const deadline = Date.now() + 3000;
    while (!again.log().includes('its mode is now 0600') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.match(again.log(), /readable by others; its mode is now 0600/);
    assert.equal(await again.publicKey(), text(key.stdout).trim());
  });
});

/** Uploads `dep`, `app` (refers to dep) and `other`, and reads `app` so it is recent. */
async function populate(
  server: TestServer,
): Promise<{ dep: Fixture; app: Fixture; other: Fixture }> {
  const token = await server.token('push');
  const dep = makeFixture({ name: 'dep', size: 50_000 });
  const other = makeFixture({ name: 'other', size: 50_000 });
  const app = makeFixture({ name: 'app', size: 50_000, references: [dep.baseName] });
  for (const fixture of [dep, other, app]) {
    const result = await upload(server.url, token, fixture);
    assert.equal(result.narinfo, 201, result.narinfoBody);
  }
  return { dep, app, other };
}

async function served(server: TestServer, fixture: Fixture): Promise<boolean> {
  const response = await fetch(`${server.url}/${fixture.hashPart}.narinfo`);
  await response.arrayBuffer();
  return response.status === 200;
}

describe('firn cache gc', () => {
  test("dry run changes nothing; a real run evicts old paths but never a kept path's dependency", async (t) => {
    const server = await serverFor(t);
    const { dep, app, other } = await populate(server);
    const data = server.dataDir;

    const dry = await firn(['cache', 'gc', '--data', data, '--older-than', '0s', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stderr, /would evict 3 paths, 3 NAR files/);
    for (const fixture of [dep, app, other]) assert.ok(await served(server, fixture));

    // Keep room for about two paths: the oldest unreferenced ones go first, and dep only
    // after app, which refers to it.
    const gc = await firn(['cache', 'gc', '--data', data, '--max-size', '120K', '--json']);
    assert.equal(gc.code, 0, gc.stderr);
    const report = JSON.parse(text(gc.stdout)) as { evictedPaths: string[]; removedNars: number };
    assert.deepEqual(report.evictedPaths, [other.storePath]);
    assert.equal(report.removedNars, 1);
    assert.equal(await served(server, other), false);
    const nar = await fetch(`${server.url}/nar/${other.fileName}`, { method: 'HEAD' });
    assert.equal(nar.status, 404, 'the evicted NAR file is gone');
    assert.ok(await served(server, app));
    assert.ok(await served(server, dep));

    const all = await firn(['cache', 'gc', '--data', data, '--max-size', '0']);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(
      text(all.stdout).trim().split('\n'),
      [`evicted ${app.storePath}`, `evicted ${dep.storePath}`],
      'a referrer is evicted before its dependency',
    );
    assert.equal(await served(server, dep), false);
    const verify = await firn(['cache', 'verify', '--data', data]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stderr, /checked 0 NAR files/);
  });

  test('needs --max-size or --older-than, and valid ones', async (t) => {
    const data = tempDir(t, 'firn-cli-gc-');
    for (const args of [[], ['--max-size', 'lots'], ['--older-than', '30']]) {
      const result = await firn(['cache', 'gc', '--data', data, ...args]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /\[FIRN_E_USAGE\]/);
    }
  });
});

describe('firn cache verify', () => {
  test('all good on a populated cache; a corrupted blob is named and exits 1', async (t) => {
    const server = await serverFor(t);
    const { app, other } = await populate(server);
    const data = server.dataDir;
    const good = await firn(['cache', 'verify', '--data', data]);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stderr, /checked 3 NAR files .*: all good/);
    assert.equal(text(good.stdout), '');

    const blob = join(data, 'blobs', 'nar', app.fileName);
    const bytes = readFileSync(blob);
    bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] ?? 0) ^ 1;
    writeFileSync(blob, bytes);
    const bad = await firn(['cache', 'verify', '--data', data]);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(text(bad.stdout), new RegExp(`^CORRUPT nar/${app.fileName}: `, 'm'));
    assert.doesNotMatch(text(bad.stdout), new RegExp(other.fileName));
    assert.match(bad.stderr, /checked 3 NAR files .*: \d+ problems/);
    const json = await firn(['cache', 'verify', '--data', data, '--json']);
    assert.equal(json.code, 1);
    const report = JSON.parse(text(json.stdout)) as { problems: { key: string }[] };
    assert.ok(report.problems.length > 0);
    assert.ok(report.problems.every((problem) => problem.key === `nar/${app.fileName}`));
  });

  test('gc and verify while the server takes an upload leave that upload alone', async (t) => {
    const server = await serverFor(t);
    await populate(server);
    const token = await server.token('push');
    const fixture = makeFixture({ size: 1 << 20 });
    // Hold an upload open halfway, so its temp file exists while the commands run.
    const socket = connect(server.port, '127.0.0.1');
    t.after(() => socket.destroy());
    let response = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (response += chunk));
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(
      `PUT /nar/${fixture.fileName} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        `Content-Length: ${fixture.file.length}\r\nConnection: close\r\n\r\n`,
    );
    socket.write(fixture.file.subarray(0, fixture.file.length >> 1));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const verify = await firn(['cache', 'verify', '--data', server.dataDir]);
    assert.equal(verify.code, 0, verify.stderr);
    const gc = await firn(['cache', 'gc', '--data', server.dataDir, '--older-than', '30d']);
    assert.equal(gc.code, 0, gc.stderr);
    // Not end(): Node takes a client's half-close as an abort of the request.
    socket.write(fixture.file.subarray(fixture.file.length >> 1));
    await new Promise((resolve) => socket.once('close', resolve));
    assert.match(response, /^HTTP\/1\.1 201 /, response);
    const narinfo = await put(server.url, `/${fixture.hashPart}.narinfo`, fixture.narinfo, token);
    assert.equal(narinfo.status, 201, await narinfo.text());
  });
});

describe('firn serve', () => {
  test('prints a banner with the URL, public key and nix.conf lines; SIGTERM exits 0', async (t) => {
    const data = tempDir(t, 'firn-cli-serve-');
    const port = await freePort();
    const child = spawn(
      FIRN_BIN,
      ['serve', '--data', data, '--listen', `127.0.0.1:${port}`, '--key-name', 'banner-test-1'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    t.after(() => child.kill('SIGKILL'));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    let stderr = '';
    child.stdout.resume();
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const deadline = Date.now() + 20_000;
    while (!stderr.includes('then: nix copy') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const url = `http://127.0.0.1:${port}`;
    const key = text((await firn(['cache', 'key', '--data', data])).stdout).trim();
    assert.match(key, /^banner-test-1:/);
    assert.match(stderr, new RegExp(`^firn cache listening on ${url}$`, 'm'));
    assert.ok(stderr.includes(`public key: ${key}`), stderr);
    assert.ok(stderr.includes(`extra-substituters = ${url}\n`), stderr);
    assert.ok(stderr.includes(`extra-trusted-public-keys = ${key}\n`), stderr);
    assert.ok(stderr.includes(`firn cache token create --data ${data}`), stderr);
    assert.equal((await fetch(`${url}/nix-cache-info`)).status, 200);

    child.kill('SIGTERM');
    assert.equal(await within(5000, exited), 0);
    await assert.rejects(fetch(`${url}/nix-cache-info`));
  });

  test('an upload in flight when SIGTERM arrives is finished before the process exits', async (t) => {
    const server = await serverFor(t);
    const token = await server.token('push');
    const fixture = makeFixture({ size: 1 << 20 });
    const socket = connect(server.port, '127.0.0.1');
    t.after(() => socket.destroy());
    let response = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (response += chunk));
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(
      `PUT /nar/${fixture.fileName} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        `Content-Length: ${fixture.file.length}\r\n\r\n`,
    );
    socket.write(fixture.file.subarray(0, 1000));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const exited = new Promise<number | null>((resolve) => server.child.once('exit', resolve));
    server.child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(server.child.exitCode, null, 'still finishing the upload');
    socket.write(fixture.file.subarray(1000));
    // The client keeps its connection open (keep-alive): that must not hold up the exit.
    assert.equal(await within(5000, exited), 0);
    assert.match(response, /^HTTP\/1\.1 201 /, response);
    const check = await firn(['cache', 'verify', '--data', server.dataDir, '--json']);
    assert.equal(check.code, 0, check.stderr);
    assert.equal((JSON.parse(text(check.stdout)) as { checked: number }).checked, 1);
  });
});

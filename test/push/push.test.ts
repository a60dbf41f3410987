/**
 * `firn push` against the real `firn serve`, with closures built by the real Nix in a chroot
 * store: everything lands and substitutes, a second push sends nothing, bad paths and missing
 * tokens fail clearly, a cache that dies mid-push gives retries then a clear failure with
 * nothing claimed that was not stored, and upstream caches are skipped.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { PushEvent } from '../../src/push/events.ts';
import { firn, FIRN_BIN } from '../helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import {
  accesses,
  batchEntries,
  buildLargePaths,
  buildShape,
  committedOrder,
  cacheMissing,
  hashPart,
  narPuts,
  SANDBOX_PATHS,
  substitute,
  type Built,
  type Shape,
} from './fixtures.ts';

let work: string;
let nix: NixEnv;
let store: string;

before(() => {
  work = mkdtempSync(join(tmpdir(), 'firn-push-test-'));
  store = join(work, 'store');
  nix = makeNixEnv(`extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}\nmax-jobs = 4`);
});

after(() => {
  nix[Symbol.dispose]();
  rmSync(work, { recursive: true, force: true });
});

/** A fresh closure of `shape` (new salt) in the test's chroot store. */
function freshShape(shape: Shape): Promise<Built> {
  return buildShape(nix, { dir: work, store, salt: randomUUID(), shape });
}

function events(stdout: Buffer): PushEvent[] {
  return stdout
    .toString('utf8')
    .trim()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as PushEvent);
}

async function tokenFile(server: TestServer, name: string): Promise<string> {
  const file = join(work, `${name}.token`);
  writeFileSync(file, (await server.token('push')) + '\n');
  return file;
}

function pushArgs(server: TestServer, token: string, ...rest: string[]): string[] {
  return ['push', '--cache', server.url, '--token-file', token, '--store', store, ...rest];
}

describe('a closure pushed with firn push', () => {
  let server: TestServer;
  let built: Built;
  let token: string;

  before(async () => {
    built = await freshShape({ mids: 6, blobs: 2, blobBytes: 3 * 1024 * 1024, extra: 0 });
    server = await startTestServer();
    token = await tokenFile(server, 'main');
  });

  after(async () => {
    await server[Symbol.asyncDispose]();
  });

  test('lands whole, reports NDJSON events, and substitutes into a fresh store', async () => {
    const result = await firn(pushArgs(server, token, '--json', built.top));
    assert.equal(result.code, 0, result.stderr);
    const seen = events(result.stdout);
    const plan = seen.find((event) => event.event === 'plan');
    assert.ok(plan?.event === 'plan');
    assert.equal(plan.roots, 1);
    assert.equal(plan.closure, built.paths.length);
    assert.equal(plan.present, 0);
    assert.equal(plan.upload, built.paths.length);
    assert.ok(plan.narBytes > 6 * 1024 * 1024);
    const uploaded = seen.flatMap((event) => (event.event === 'uploaded' ? [event.path] : []));
    assert.deepEqual(uploaded.sort(), [...built.paths]);
    const done = seen.at(-1);
    assert.equal(done?.event, 'done');
    assert.deepEqual(await cacheMissing(server.url, built.paths), []);

    // Each path was committed after its references; the small ones came in batches.
    const order = committedOrder(server.log());
    assert.deepEqual([...order].sort(), [...built.paths]);
    const infos = await nix.nix('nix', [
      'path-info',
      '--json',
      '--recursive',
      '--store',
      store,
      built.top,
    ]);
    for (const info of JSON.parse(infos.stdout.toString('utf8')) as {
      path: string;
      references: string[];
    }[]) {
      for (const ref of info.references) {
        if (ref === info.path) continue;
        assert.ok(order.indexOf(ref) < order.indexOf(info.path), `${ref} before ${info.path}`);
      }
    }
    const batched = batchEntries(server.log()).map((entry) => entry.storePath);
    const small = built.paths.filter((path) => !/-blob-\d+$/.test(path));
    assert.deepEqual(batched.sort(), small, 'every small path went in a batch');
    const posts = accesses(server.log()).filter((access) => access.url === '/api/v1/paths');
    assert.ok(posts.length >= 1 && posts.length < small.length, `${posts.length} batches`);
    const narinfoPuts = accesses(server.log()).filter(
      (access) => access.method === 'PUT' && access.url.endsWith('.narinfo'),
    );
    assert.equal(narinfoPuts.length, 2, 'only the two large paths went by PUT');

    // Random (incompressible) large NARs go up as they are, named by their NAR hash; small
    // ones under compress-min-size uncompressed too.
    const narinfo = async (path: string): Promise<string> =>
      (await fetch(`${server.url}/${hashPart(path)}.narinfo`)).text();
    const blob = await narinfo(built.paths.find((path) => path.endsWith('-blob-0')) ?? '');
    assert.match(blob, /^Compression: none$/m);
    const narHash = /^NarHash: sha256:([0-9a-z]{52})$/m.exec(blob)?.[1];
    assert.ok(narHash !== undefined, blob);
    assert.match(blob, new RegExp(`^URL: nar/${narHash}\\.nar$`, 'm'));
    const top = await narinfo(built.top);
    assert.match(top, /^Compression: none$/m);
    assert.match(top, /^URL: nar\/[0-9a-z]{52}\.nar$/m);
    assert.match(top, /^Deriver: [0-9a-z]{32}-top\.drv$/m);

    await substitute(nix, {
      store: join(work, 'fresh-1'),
      url: server.url,
      key: await server.publicKey(),
      paths: [built.top],
    });
  });

  test('a second push sends nothing', async () => {
    const before = accesses(server.log()).filter((access) => access.method === 'PUT').length;
    const result = await firn(pushArgs(server, token, built.top));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, new RegExp(`${built.paths.length} in the cache, 0 to upload`));
    const after = accesses(server.log()).filter((access) => access.method === 'PUT').length;
    assert.equal(after, before);
  });

  test('paths from stdin, and the token from the netrc file Nix uses', async () => {
    const extra = await freshShape({ mids: 1, blobs: 0, blobBytes: 0, extra: 2 });
    const confDir = join(work, 'netrc-conf');
    mkdirSync(confDir, { recursive: true });
    const secret = (await server.token('push')).trim();
    writeFileSync(join(confDir, 'netrc'), `machine 127.0.0.1 login firn password ${secret}\n`);
    const result = await firn(['push', '--cache', server.url, '--store', store, '--stdin'], {
      input: extra.extra.join('\n') + '\n',
      env: { NIX_CONF_DIR: confDir, FIRN_TOKEN: '' },
    });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await cacheMissing(server.url, extra.extra), []);
  });

  test('no token: a clear authentication error', async () => {
    const fresh = await freshShape({ mids: 0, blobs: 0, blobBytes: 0, extra: 1 });
    const result = await firn(['push', '--cache', server.url, '--store', store, ...fresh.extra], {
      env: { NIX_CONF_DIR: join(work, 'nowhere'), FIRN_TOKEN: '' },
    });
    assert.equal(result.code, 77, result.stderr);
    assert.match(result.stderr, /\[FIRN_E_AUTH_REQUIRED\]/);
    assert.match(result.stderr, /netrc/);
  });
});

test('a missing or invalid path is a clear error and uploads nothing', async () => {
  await using server = await startTestServer();
  const token = await tokenFile(server, 'invalid');
  const absent = `/nix/store/${'0'.repeat(32)}-absent`;
  const missing = await firn(pushArgs(server, token, absent));
  assert.equal(missing.code, 66);
  assert.match(
    missing.stderr,
    /not valid in the local Nix store.*absent.*\[FIRN_E_PATH_NOT_IN_STORE\]/,
  );
  const outside = await firn(pushArgs(server, token, join(work, 'no-such-file')));
  assert.equal(outside.code, 66);
  assert.match(outside.stderr, /is not in the Nix store.*\[FIRN_E_PATH_NOT_IN_STORE\]/);
  const noCache = await firn(['push', '--store', store, absent], { env: { FIRN_CACHE: '' } });
  assert.equal(noCache.code, 78);
  assert.match(noCache.stderr, /no cache to push to.*\[FIRN_E_CONFIG_INVALID\]/);
  assert.equal(accesses(server.log()).filter((access) => access.method === 'PUT').length, 0);
});

test('the cache dying mid-push: retries, a clear failure, and nothing reported stored that is not', async () => {
  const built = await freshShape({ mids: 40, blobs: 6, blobBytes: 4 * 1024 * 1024, extra: 0 });
  const dataDir = mkdtempSync(join(tmpdir(), 'firn-push-dying-'));
  try {
    const server = await startTestServer({ dataDir });
    const token = await tokenFile(server, 'dying');
    const child = spawn(
      FIRN_BIN,
      [
        ...pushArgs(
          server,
          token,
          '--json',
          '--jobs',
          '1',
          '--retries',
          '3',
          '--retry-delay',
          '40ms',
          built.top,
        ),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number>((resolve) =>
      child.once('close', (code) => {
        resolve(code ?? -1);
      }),
    );
    // Kill the cache once the first few paths are in.
    const deadline = Date.now() + 30_000;
    while (narPuts(server.log()).size < 3 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await server.kill();
    const code = await exited;
    assert.equal(code, 69, stderr);
    assert.match(stderr, /cannot reach the cache .* failed 4 times.*\[FIRN_E_CACHE_UNREACHABLE\]/s);
    const seen = events(Buffer.from(stdout));
    assert.ok(
      seen.some((event) => event.event === 'retry'),
      'retries were reported',
    );
    const reported = seen.flatMap((event) => (event.event === 'uploaded' ? [event.path] : []));
    assert.ok(reported.length < built.paths.length, 'the push was cut short');

    // Everything the push called stored is in the cache; pushing again completes the closure.
    await using restarted = await startTestServer({ dataDir });
    const missingAfterKill = new Set(await cacheMissing(restarted.url, built.paths));
    for (const path of reported)
      assert.ok(!missingAfterKill.has(hashPart(path)), `${path} was reported stored`);
    const again = await firn(pushArgs(restarted, token, built.top));
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(await cacheMissing(restarted.url, built.paths), []);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('paths an upstream cache serves are not pushed', async () => {
  const built = await freshShape({ mids: 2, blobs: 0, blobBytes: 0, extra: 0 });
  await using upstream = await startTestServer();
  await using server = await startTestServer({ args: ['--allow-missing-references'] });
  const lib = built.paths.find((path) => path.endsWith('-lib'));
  assert.ok(lib !== undefined);
  const upToken = await tokenFile(upstream, 'upstream');
  assert.equal((await firn(pushArgs(upstream, upToken, lib))).code, 0);
  const token = await tokenFile(server, 'downstream');
  const result = await firn(
    pushArgs(server, token, '--json', '--upstream', upstream.url, built.top),
  );
  assert.equal(result.code, 0, result.stderr);
  const plan = events(result.stdout).find((event) => event.event === 'plan');
  assert.equal(plan?.event === 'plan' ? plan.upstream : -1, 1);
  assert.deepEqual(await cacheMissing(server.url, built.paths), [hashPart(lib)]);
});

test('two pushes of the same closure at once (two builders, one output): both succeed, each path stored once', async () => {
  const built = await freshShape({ mids: 12, blobs: 2, blobBytes: 2 * 1024 * 1024, extra: 0 });
  await using server = await startTestServer();
  const token = await tokenFile(server, 'racing');
  const [first, second] = await Promise.all([
    firn(pushArgs(server, token, '--json', built.top)),
    firn(pushArgs(server, token, '--json', built.top)),
  ]);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(second.code, 0, second.stderr);
  assert.deepEqual(await cacheMissing(server.url, built.paths), []);
  // Every path is reported stored by at least one of them, and no PUT was refused.
  const uploaded = new Set(
    [first, second].flatMap((result) =>
      events(result.stdout).flatMap((event) => (event.event === 'uploaded' ? [event.path] : [])),
    ),
  );
  assert.deepEqual([...uploaded].sort(), [...built.paths]);
  const refused = accesses(server.log()).filter(
    (access) => access.method === 'PUT' && access.status >= 400,
  );
  assert.deepEqual(refused, [], 'identical concurrent uploads are no-ops, not conflicts');
  const stats = (await (await fetch(`${server.url}/api/v1/stats`)).json()) as { paths?: number };
  assert.equal(stats.paths, built.paths.length, JSON.stringify(stats));
  await substitute(nix, {
    store: join(work, 'fresh-race'),
    url: server.url,
    key: await server.publicKey(),
    paths: [built.top],
  });
});

test('large NARs: zstd when it pays, as they are when not; a damaged store path is refused with the way to repair it', async () => {
  const large = await buildLargePaths(nix, { dir: work, store });
  await using server = await startTestServer();
  const token = await tokenFile(server, 'large');
  const result = await firn(pushArgs(server, token, large.text, large.noise));
  assert.equal(result.code, 0, result.stderr);
  const narinfo = async (path: string): Promise<string> =>
    (await fetch(`${server.url}/${hashPart(path)}.narinfo`)).text();
  const field = (text: string, name: string): string =>
    new RegExp(`^${name}: (.*)$`, 'm').exec(text)?.[1] ?? '';
  const text = await narinfo(large.text);
  assert.equal(field(text, 'Compression'), 'zstd');
  assert.ok(Number(field(text, 'FileSize')) * 20 < Number(field(text, 'NarSize')), text);
  const noise = await narinfo(large.noise);
  assert.equal(field(noise, 'Compression'), 'none');
  assert.equal(field(noise, 'FileSize'), field(noise, 'NarSize'));
  assert.equal(field(noise, 'FileHash'), field(noise, 'NarHash'));
  await substitute(nix, {
    store: join(work, 'fresh-large'),
    url: server.url,
    key: await server.publicKey(),
    paths: [large.text, large.noise],
  });

  // Same size, other bytes: only the cache's hash can tell (of the NAR sent as it is, or of the
  // compressed one against the narinfo); it refuses, firn says what to do.
  for (const path of [large.damaged, large.damagedText]) {
    const file = join(store, path);
    const bytes = readFileSync(file);
    bytes[1000] = (bytes[1000] ?? 0) ^ 0xff;
    writeFileSync(file, bytes);
  }
  // Longer than the database says: firn notices while sending.
  appendFileSync(join(store, large.grown), 'more');
  for (const path of [large.damaged, large.grown, large.damagedText]) {
    const refused = await firn(pushArgs(server, token, path));
    assert.equal(refused.code, 65, refused.stderr);
    assert.match(
      refused.stderr,
      new RegExp(
        `${path} is not what the Nix database recorded.*\\[FIRN_E_UPLOAD_HASH_MISMATCH\\]`,
      ),
    );
    assert.match(refused.stderr, /nix-store --verify-path/);
  }
  const refusedPaths = [large.damaged, large.grown, large.damagedText];
  assert.deepEqual(await cacheMissing(server.url, refusedPaths), refusedPaths.map(hashPart));
  const stats = (await (await fetch(`${server.url}/api/v1/stats`)).json()) as {
    paths: number;
    nars: number;
  };
  assert.equal(stats.paths, 2);
  // The damaged text's NAR was whole zstd bytes, so it was kept: no narinfo names it, and
  // `firn cache gc` drops such NARs after an hour. The other two left nothing.
  assert.equal(stats.nars, 3);
});

test('a cache without batches (not firn, or --batch-paths 0): every path by PUT, all stored', async () => {
  const built = await freshShape({ mids: 5, blobs: 1, blobBytes: 2 * 1024 * 1024, extra: 0 });
  await using server = await startTestServer();
  const token = await tokenFile(server, 'nobatch');
  // In front of firn, a proxy that knows no batch route (as an older firn would not).
  const refusedBatches: string[] = [];
  const proxy = createServer((request, response) => {
    if (request.url === '/api/v1/paths') {
      refusedBatches.push(request.method ?? '');
      request.resume();
      response.writeHead(404).end('not found\n');
      return;
    }
    const upstream = httpRequest(
      `${server.url}${request.url ?? '/'}`,
      { method: request.method, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    request.pipe(upstream);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address();
  const proxyUrl = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  try {
    const result = await firn([
      'push',
      '--cache',
      proxyUrl,
      '--token-file',
      token,
      '--store',
      store,
      built.top,
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(refusedBatches, ['POST'], 'one batch tried, then PUTs');
    assert.deepEqual(await cacheMissing(server.url, built.paths), []);
    const narinfoPuts = accesses(server.log()).filter(
      (access) => access.method === 'PUT' && access.url.endsWith('.narinfo'),
    );
    assert.equal(narinfoPuts.length, built.paths.length);
  } finally {
    await new Promise((resolve) => proxy.close(resolve));
  }

  const other = await freshShape({ mids: 3, blobs: 0, blobBytes: 0, extra: 0 });
  const unbatched = await firn(pushArgs(server, token, '--batch-paths', '0', other.top));
  assert.equal(unbatched.code, 0, unbatched.stderr);
  assert.deepEqual(await cacheMissing(server.url, other.paths), []);
  assert.equal(
    accesses(server.log()).filter((access) => access.url === '/api/v1/paths').length,
    0,
    '--batch-paths 0 sends no batch',
  );
});

test('small batches: a path whose reference left in the batch before waits for it (no refusals)', async () => {
  const built = await freshShape({ mids: 12, blobs: 0, blobBytes: 0, extra: 0 });
  await using server = await startTestServer();
  const token = await tokenFile(server, 'small-batches');
  const result = await firn(pushArgs(server, token, '--batch-paths', '3', built.top));
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(await cacheMissing(server.url, built.paths), []);
  const posts = accesses(server.log()).filter((access) => access.url === '/api/v1/paths');
  assert.ok(posts.length >= Math.ceil(built.paths.length / 3), `${posts.length} batches`);
  assert.ok(
    posts.every((post) => post.status === 200),
    'every batch answered',
  );
  assert.ok(!server.log().includes('"path refused"'), 'no entry was refused');
  const order = committedOrder(server.log());
  const lib = built.paths.find((path) => path.endsWith('-lib')) ?? '';
  assert.equal(order[0], lib, 'lib, which every mid references, was committed first');
});

/**
 * `firn serve` with the real Nix 2.8 as its client: `nix copy --to` pushes closures through a
 * netrc token with each compression, the cache signs them, and `nix copy --from`,
 * substitution, `nix store verify` and `nix log` read them back into fresh chroot stores.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseNarInfo } from '../../src/nix/narinfo.ts';
import { firn } from '../helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { basicAuth, bearer, sha256, stats } from './upload-fixtures.ts';
import { formatHash } from '../../src/nix/hash.ts';

// A chroot store builds in a chroot: give /bin/sh, coreutils and their libraries to the builder.
const SANDBOX_PATHS = ['/bin', '/usr', '/lib', '/lib64'].filter((path) => existsSync(path));
const KINDS = ['zstd', 'xz', 'none'] as const;
type Kind = (typeof KINDS)[number];

// Three input-addressed closures (app -> data -> lib, app -> lib), one per compression. `data`
// is a directory with a text file, an executable, a symlink and a random blob (3 MiB for zstd).
const EXPRESSION = `{ salt }:
let
  mk = name: script: derivation {
    inherit name salt;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  };
  closure = tag: blobKiB: rec {
    lib = mk "lib-\${tag}" "echo lib \${tag} $salt > $out";
    data = mk "data-\${tag}" ''
      mkdir -p $out/share/doc
      echo \${lib} > $out/share/doc/readme
      head -c \${toString (blobKiB * 1024)} /dev/urandom > $out/share/blob
      ln -s doc/readme $out/share/link
      printf '#!/bin/sh\\necho hi\\n' > $out/run
      chmod +x $out/run
      echo built data \${tag}
    '';
    app = mk "app-\${tag}" "echo \${lib} \${data} > $out";
  };
in {
  zstd = closure "zstd" 3072;
  xz = closure "xz" 64;
  none = closure "none" 64;
}
`;

interface Closure {
  readonly app: string;
  readonly data: string;
  readonly lib: string;
  /** Every path, sorted. */
  readonly paths: string[];
}

let work: string;
let uploader: NixEnv;
let client: NixEnv;
let store: string;
let closures: Record<Kind, Closure>;
let server: TestServer;
let pushToken: string;
let readToken: string;
let cacheKey: string;

const uploaderNetrc = (): string => join(work, 'uploader.netrc');
const clientNetrc = (): string => join(work, 'client.netrc');

function netrcLine(token: string): string {
  return `machine 127.0.0.1 login firn password ${token}\n`;
}

function hashPart(path: string): string {
  return path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
}

function freshStore(): string {
  return join(work, `fresh-${randomUUID()}`);
}

async function pushClosure(
  kind: Kind,
  query: string,
  token: string | undefined,
): Promise<{ code: number; stderr: string }> {
  writeFileSync(uploaderNetrc(), token === undefined ? '' : netrcLine(token));
  return uploader.nixRaw('nix', [
    'copy',
    '--store',
    store,
    '--to',
    `${server.url}?${query}`,
    closures[kind].app,
  ]);
}

async function narinfoOf(path: string, base = server.url): Promise<string> {
  const response = await fetch(`${base}/${hashPart(path)}.narinfo`, { headers: bearer(readToken) });
  assert.equal(response.status, 200, `${path}: ${await response.clone().text()}`);
  return response.text();
}

/** Every path of the closure is served, signed by the cache and stored with `compression`. */
async function assertServedAndSigned(kind: Kind, compression: string): Promise<void> {
  for (const path of closures[kind].paths) {
    const text = await narinfoOf(path);
    const info = parseNarInfo(text);
    assert.equal(info.storePath, path);
    assert.equal(info.compression, compression);
    const verified = await firn(['narinfo', 'verify', '--trusted-key', cacheKey], { input: text });
    assert.equal(verified.code, 0, verified.stderr);
    assert.equal(verified.stdout.toString(), 'test-cache-1\n');
    const nar = await fetch(`${server.url}/${info.url}`);
    assert.equal(nar.status, 200);
    const bytes = Buffer.from(await nar.arrayBuffer());
    assert.equal(bytes.length, info.fileSize);
    assert.ok(info.fileHash !== undefined);
    assert.equal(formatHash(sha256(bytes)), formatHash(info.fileHash));
  }
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'firn-nix-client-'));
  writeFileSync(uploaderNetrc(), '');
  writeFileSync(clientNetrc(), '');
  uploader = makeNixEnv(
    `extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}\nnetrc-file = ${uploaderNetrc()}`,
  );
  client = makeNixEnv(`netrc-file = ${clientNetrc()}`);
  store = join(uploader.dir, 'store');
  const expr = join(work, 'closures.nix');
  writeFileSync(expr, EXPRESSION);
  const attrs = KINDS.flatMap((kind) => [
    '-A',
    `${kind}.app`,
    '-A',
    `${kind}.data`,
    '-A',
    `${kind}.lib`,
  ]);
  const built = await uploader.nix('nix-build', [
    '--store',
    store,
    '--no-out-link',
    expr,
    '--argstr',
    'salt',
    randomUUID(),
    ...attrs,
  ]);
  const outs = built.stdout.toString().trim().split('\n');
  assert.equal(outs.length, 9, built.stderr);
  closures = Object.fromEntries(
    KINDS.map((kind, i) => {
      const [app = '', data = '', lib = ''] = outs.slice(3 * i, 3 * i + 3);
      return [kind, { app, data, lib, paths: [app, data, lib].sort() }];
    }),
  ) as Record<Kind, Closure>;
  server = await startTestServer();
  pushToken = await server.token('push');
  readToken = await server.token('read');
  cacheKey = await server.publicKey();
});

after(async () => {
  await server[Symbol.asyncDispose]();
  uploader[Symbol.dispose]();
  client[Symbol.dispose]();
  rmSync(work, { recursive: true, force: true });
});

describe('nix copy --to the cache', () => {
  test('without a token it fails with 401 and nothing is stored', async () => {
    const result = await pushClosure('zstd', 'compression=zstd', undefined);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /HTTP error 401/);
    assert.match(result.stderr, /FIRN_E_AUTH_REQUIRED/);
    assert.deepEqual(await stats(server.url), { paths: 0, nars: 0, narBytes: 0 });
    for (const path of closures.zstd.paths) {
      const response = await fetch(`${server.url}/${hashPart(path)}.narinfo`);
      assert.equal(response.status, 404);
    }
  });

  test('with a read-only token it fails with 403 and nothing is stored', async () => {
    const result = await pushClosure('zstd', 'compression=zstd', readToken);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /HTTP error 403/);
    assert.match(result.stderr, /FIRN_E_AUTH_FORBIDDEN/);
    assert.deepEqual(await stats(server.url), { paths: 0, nars: 0, narBytes: 0 });
  });

  test('zstd with NAR listings: every path is served, signed by the cache, with its .ls', async () => {
    const result = await pushClosure('zstd', 'compression=zstd&write-nar-listing=1', pushToken);
    assert.equal(result.code, 0, result.stderr);
    await assertServedAndSigned('zstd', 'zstd');
    const listing = await fetch(`${server.url}/${hashPart(closures.zstd.data)}.ls`);
    assert.equal(listing.status, 200);
    const json = (await listing.json()) as {
      version: number;
      root: { type: string; entries: Record<string, { type: string; executable?: boolean }> };
    };
    assert.equal(json.version, 1);
    assert.equal(json.root.type, 'directory');
    assert.deepEqual(Object.keys(json.root.entries).sort(), ['run', 'share']);
    assert.equal(json.root.entries.run?.executable, true);
    const blob = await narinfoOf(closures.zstd.data);
    assert.ok(parseNarInfo(blob).narSize > 3 << 20, 'the data path holds a multi-MiB file');
  });

  test('xz: every path is served and signed', async () => {
    const result = await pushClosure('xz', 'compression=xz', pushToken);
    assert.equal(result.code, 0, result.stderr);
    await assertServedAndSigned('xz', 'xz');
  });

  test('none: every path is served and signed; pushing again uploads nothing', async () => {
    const result = await pushClosure('none', 'compression=none', pushToken);
    assert.equal(result.code, 0, result.stderr);
    await assertServedAndSigned('none', 'none');
    const before = await stats(server.url);
    assert.equal(before.paths, 9);
    const again = await pushClosure('none', 'compression=none', pushToken);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stderr, /copying path/);
    assert.deepEqual(await stats(server.url), before);
  });
});

describe('reading the cache with nix', () => {
  test('nix copy --from, trusting the cache key, makes the closures valid in a fresh store', async () => {
    for (const kind of KINDS) {
      const fresh = freshStore();
      const result = await client.nixRaw('nix', [
        'copy',
        '--from',
        server.url,
        '--to',
        fresh,
        '--option',
        'trusted-public-keys',
        cacheKey,
        closures[kind].app,
      ]);
      assert.equal(result.code, 0, result.stderr);
      const copied = await client.nix('nix', [
        'path-info',
        '--store',
        fresh,
        '-r',
        closures[kind].app,
      ]);
      assert.deepEqual(copied.stdout.toString().trim().split('\n').sort(), closures[kind].paths);
      // Same contents as the store they were built in.
      const [there, here] = await Promise.all([
        uploader.nix('nix', ['path-info', '--store', store, '--json', '-r', closures[kind].app]),
        client.nix('nix', ['path-info', '--store', fresh, '--json', '-r', closures[kind].app]),
      ]);
      const hashes = (json: Buffer): string[] =>
        (JSON.parse(json.toString()) as { path: string; narHash: string }[])
          .map((info) => `${info.path} ${info.narHash}`)
          .sort();
      assert.deepEqual(hashes(here.stdout), hashes(there.stdout));
      const sigs = await client.nix('nix', [
        'path-info',
        '--store',
        fresh,
        '--sigs',
        closures[kind].app,
      ]);
      assert.match(sigs.stdout.toString(), /test-cache-1:/);
    }
  });

  test('nix copy --from trusting another key is refused: the paths lack a valid signature', async () => {
    const other = 'other-cache-1:' + Buffer.alloc(32, 7).toString('base64');
    const result = await client.nixRaw('nix', [
      'copy',
      '--from',
      server.url,
      '--to',
      freshStore(),
      '--option',
      'trusted-public-keys',
      other,
      closures.xz.app,
    ]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /lacks a valid signature/);
  });

  test('substitution: nix-store --realise with the cache as the only substituter', async () => {
    const fresh = freshStore();
    const result = await client.nixRaw('nix-store', [
      '--store',
      fresh,
      '--realise',
      closures.zstd.app,
      '--option',
      'substituters',
      server.url,
      '--option',
      'trusted-public-keys',
      cacheKey,
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.toString().trim(), closures.zstd.app);
    assert.match(result.stderr, /copying path .*-data-zstd' from 'http:\/\/127\.0\.0\.1/);
    const blob = join(fresh, closures.zstd.data, 'share', 'blob');
    assert.equal(readFileSync(blob).length, 3072 * 1024);
    assert.equal(
      readFileSync(join(fresh, closures.zstd.data, 'share', 'doc', 'readme'), 'utf8'),
      `${closures.zstd.lib}\n`,
    );
  });

  test('nix store verify re-downloads every NAR and checks it, trust and contents', async () => {
    const all = KINDS.map((kind) => closures[kind].app);
    // Counted by the server's metrics: its log is written asynchronously and may lag.
    // Every status counts: Nix may hang up once it has read the whole NAR, before the server
    // saw its last bytes leave, and such a download is counted as "aborted".
    const narGets = async (): Promise<number> => {
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const lines = metrics.matchAll(
        /^firn_http_requests_total\{(?=[^}]*route="\/nar\/:file")(?=[^}]*method="GET")[^}]*\} (\d+)$/gm,
      );
      return [...lines].reduce((sum, line) => sum + Number(line[1]), 0);
    };
    const before = await narGets();
    assert.ok(before > 0, 'the metric counts the NAR downloads of the earlier tests');
    const verify = (key: string): Promise<{ code: number; stderr: string }> =>
      client.nixRaw('nix', [
        'store',
        'verify',
        '--store',
        server.url,
        '--option',
        'trusted-public-keys',
        key,
        '-r',
        ...all,
      ]);
    const ok = await verify(cacheKey);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok((await narGets()) - before >= 9, 'every NAR was downloaded again');

    const untrusted = await verify('other-cache-1:' + Buffer.alloc(32, 7).toString('base64'));
    assert.notEqual(untrusted.code, 0);
    assert.match(untrusted.stderr, /untrusted/);

    // Flip one byte of an uncompressed NAR on disk: nix notices, and so does firn.
    const info = parseNarInfo(await narinfoOf(closures.none.data));
    const blobFile = join(server.dataDir, 'blobs', info.url);
    const original = readFileSync(blobFile);
    const corrupt = Buffer.from(original);
    const at = corrupt.length - 200;
    corrupt[at] = (corrupt[at] ?? 0) ^ 0xff;
    writeFileSync(blobFile, corrupt);
    try {
      const modified = await verify(cacheKey);
      assert.notEqual(modified.code, 0);
      assert.match(modified.stderr, new RegExp(`${closures.none.data}' was modified`));
    } finally {
      writeFileSync(blobFile, original);
    }
  });

  test('nix store copy-log --to the cache, then nix log --store reads it back', async () => {
    writeFileSync(uploaderNetrc(), netrcLine(pushToken));
    const copied = await uploader.nixRaw('nix', [
      'store',
      'copy-log',
      '--store',
      store,
      '--to',
      server.url,
      closures.none.data,
    ]);
    assert.equal(copied.code, 0, copied.stderr);
    const log = await client.nixRaw('nix', ['log', '--store', server.url, closures.none.data]);
    assert.equal(log.code, 0, log.stderr);
    assert.match(log.stdout.toString(), /built data none/);
  });
});

describe('a private cache', () => {
  test('reads need a token: 401 without, 200 with a read token as Basic password or Bearer', async (t) => {
    const privateServer = await startTestServer({ args: ['--private'] });
    t.after(() => privateServer[Symbol.asyncDispose]());
    const push = await privateServer.token('push');
    const read = await privateServer.token('read');
    writeFileSync(uploaderNetrc(), netrcLine(push));
    const pushed = await uploader.nixRaw('nix', [
      'copy',
      '--store',
      store,
      '--to',
      `${privateServer.url}?compression=zstd`,
      closures.xz.app,
    ]);
    assert.equal(pushed.code, 0, pushed.stderr);

    const narinfo = `${privateServer.url}/${hashPart(closures.xz.app)}.narinfo`;
    for (const path of [
      '/nix-cache-info',
      `/${hashPart(closures.xz.app)}.narinfo`,
      '/api/v1/stats',
    ]) {
      const anonymous = await fetch(`${privateServer.url}${path}`);
      assert.equal(anonymous.status, 401, path);
      assert.match(await anonymous.text(), /FIRN_E_AUTH_REQUIRED/);
    }
    assert.equal((await fetch(narinfo, { headers: basicAuth(read) })).status, 200);
    assert.equal((await fetch(narinfo, { headers: bearer(read) })).status, 200);
    assert.equal((await fetch(narinfo, { headers: bearer(push) })).status, 200);

    // Nix reads it with the read token from netrc, and not without.
    const copyFrom = (): Promise<{ code: number; stderr: string }> =>
      client.nixRaw('nix', [
        'copy',
        '--from',
        privateServer.url,
        '--to',
        freshStore(),
        '--option',
        'trusted-public-keys',
        cacheKey,
        closures.xz.app,
      ]);
    writeFileSync(clientNetrc(), '');
    assert.notEqual((await copyFrom()).code, 0);
    writeFileSync(clientNetrc(), netrcLine(read));
    const withToken = await copyFrom();
    assert.notEqual(withToken.code, 0, 'signed by the private cache, not by the first one');
    assert.match(withToken.stderr, /lacks a valid signature/);
    const privateKey = await privateServer.publicKey();
    const trusted = await client.nixRaw('nix', [
      'copy',
      '--from',
      privateServer.url,
      '--to',
      freshStore(),
      '--option',
      'trusted-public-keys',
      privateKey,
      closures.xz.app,
    ]);
    assert.equal(trusted.code, 0, trusted.stderr);
  });
});

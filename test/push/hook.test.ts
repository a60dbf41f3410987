/**
 * `firn hook` as the real Nix's post-build-hook and `firn drain` emptying the spool: builds
 * succeed while the cache is down, one drain uploads everything later (closures and build logs)
 * and a fresh store substitutes it; a drain killed halfway loses nothing and uploads nothing
 * twice; many hooks at once each land exactly once; a full disk never fails a build.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseEntry, spoolDirs, type SpoolEntry } from '../../src/push/spool.ts';
import { firn, FIRN_BIN } from '../helpers/firn.ts';
import { freePort, startTestServer } from '../helpers/server.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';
import {
  buildShape,
  cacheMissing,
  narPuts,
  SANDBOX_PATHS,
  substitute,
  writeExecutable,
  type Built,
} from './fixtures.ts';

let work: string;

before(() => {
  work = mkdtempSync(join(tmpdir(), 'firn-hook-test-'));
});

after(() => {
  rmSync(work, { recursive: true, force: true });
});

/** A Nix whose post-build-hook is `firn hook` writing to `spool`. */
function nixWithHook(spool: string, name: string): NixEnv {
  const hook = join(work, `${name}-hook.sh`);
  writeExecutable(hook, `#!/bin/sh\nFIRN_SPOOL=${spool} exec ${FIRN_BIN} hook\n`);
  return makeNixEnv(
    `extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}\nmax-jobs = 8\npost-build-hook = ${hook}`,
  );
}

function pendingEntries(spool: string): SpoolEntry[] {
  const dir = spoolDirs(spool).pending;
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith('.json') && !name.startsWith('.'))
    .map((name) => parseEntry(readFileSync(join(dir, name), 'utf8')));
}

/** Every file left under claimed/ (a drain that stopped mid-way leaves its claims there). */
function claimedFiles(spool: string): string[] {
  const dir = spoolDirs(spool).claimed;
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((owner) => readdirSync(join(dir, owner)));
}

async function drainOnce(
  spool: string,
  store: string,
  url: string,
  token: string,
  ...extra: string[]
): ReturnType<typeof firn> {
  return firn(['drain', '--once', '--spool', spool, '--store', store, '--cache', url, ...extra], {
    env: { FIRN_TOKEN: token },
  });
}

describe('builds with the cache down, drained later', () => {
  const spool = (): string => join(work, 'spool-down');
  const store = (): string => join(work, 'store-down');
  let nix: NixEnv;
  let built: Built;
  let drvs: string[];

  before(async () => {
    nix = nixWithHook(spool(), 'down');
    // No server runs at all while these build.
    built = await buildShape(nix, {
      dir: work,
      store: store(),
      salt: randomUUID(),
      shape: { mids: 5, blobs: 1, blobBytes: 512 * 1024, extra: 3 },
    });
    const query = await nix.nix('nix-store', [
      '--store',
      store(),
      '-q',
      '--deriver',
      ...built.paths,
    ]);
    drvs = query.stdout.toString('utf8').trim().split('\n').sort();
  });

  after(() => {
    nix[Symbol.dispose]();
  });

  test('every build succeeded and is in the spool exactly once', () => {
    const entries = pendingEntries(spool());
    // Nix 2.8.0 passes an empty OUT_PATHS (NixOS/nix#6446); the derivation identifies the build.
    const named = entries.map((entry) => entry.drvPath ?? '').sort();
    assert.deepEqual(named, drvs);
    for (const entry of entries) {
      for (const path of entry.outPaths) assert.ok(built.paths.includes(path));
    }
  });

  test('a drain while the cache is still down fails clearly and keeps every entry', async () => {
    const port = await freePort();
    const result = await drainOnce(
      spool(),
      store(),
      `http://127.0.0.1:${port}`,
      'x',
      '--retries',
      '1',
      '--retry-delay',
      '20ms',
    );
    assert.equal(result.code, 69, result.stderr);
    assert.match(result.stderr, /\[FIRN_E_CACHE_UNREACHABLE\]/);
    assert.equal(pendingEntries(spool()).length, drvs.length);
    assert.deepEqual(claimedFiles(spool()), []);
  });

  test('once the cache is up, one drain uploads closures and logs; a fresh store substitutes them', async () => {
    await using server = await startTestServer();
    const token = await server.token('push');
    const result = await drainOnce(spool(), store(), server.url, token);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(pendingEntries(spool()), []);
    assert.deepEqual(claimedFiles(spool()), []);
    assert.deepEqual(await cacheMissing(server.url, built.paths), []);
    const topDrv = drvs.find((drv) => drv.endsWith('-top.drv')) ?? '';
    const log = await fetch(`${server.url}/log/${topDrv.slice('/nix/store/'.length)}`);
    assert.equal(log.status, 200);
    assert.match(await log.text(), /building top/);
    const client = makeNixEnv();
    try {
      await substitute(client, {
        store: join(work, 'fresh-down'),
        url: server.url,
        key: await server.publicKey(),
        paths: [built.top, ...built.extra],
      });
    } finally {
      client[Symbol.dispose]();
    }
  });
});

test('a drain killed halfway: the next run finishes, nothing lost, nothing uploaded twice', async () => {
  const spool = join(work, 'spool-kill');
  const store = join(work, 'store-kill');
  const nix = nixWithHook(spool, 'kill');
  try {
    const built = await buildShape(nix, {
      dir: work,
      store,
      salt: randomUUID(),
      shape: { mids: 8, blobs: 4, blobBytes: 1024 * 1024, extra: 60 },
    });
    const entries = pendingEntries(spool).length;
    assert.ok(entries >= 70, `${entries} entries`);
    await using server = await startTestServer();
    const token = await server.token('push');
    const child = spawn(
      FIRN_BIN,
      // Small batches, so the kill lands between and inside them.
      [
        'drain',
        '--once',
        '--jobs',
        '1',
        '--batch-paths',
        '4',
        '--spool',
        spool,
        '--store',
        store,
        '--cache',
        server.url,
      ],
      { stdio: 'ignore', env: { ...process.env, FIRN_TOKEN: token } },
    );
    const exited = new Promise<void>((resolve) =>
      child.once('close', () => {
        resolve();
      }),
    );
    const deadline = Date.now() + 30_000;
    while (narPuts(server.log()).size < 8 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    child.kill('SIGKILL');
    await exited;
    const stored = narPuts(server.log()).size;
    assert.ok(
      stored >= 8 && stored < built.paths.length,
      `killed after ${stored} of ${built.paths.length} NARs`,
    );
    assert.ok(claimedFiles(spool).length > 0, 'the killed drain held claims');

    const result = await drainOnce(spool, store, server.url, token);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /taken back from a drain that stopped/);
    assert.deepEqual(pendingEntries(spool), []);
    assert.deepEqual(claimedFiles(spool), []);
    assert.deepEqual(await cacheMissing(server.url, built.paths), []);
    const stats = (await (await fetch(`${server.url}/api/v1/stats`)).json()) as { nars: number };
    assert.equal(stats.nars, built.paths.length, 'every NAR is stored, once');
    // The access log lags the store by one request: a NAR whose PUT completed on the server just
    // as the drain was killed is stored with no log line (the client never took the answer), and
    // the next drain's HEAD finds it and sends nothing. So the log may name one NAR fewer.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const puts = narPuts(server.log());
    assert.ok(
      puts.size >= built.paths.length - 1,
      `${puts.size} NARs in the log of ${built.paths.length}`,
    );
    const twice = [...puts].filter(([, count]) => count > 1);
    assert.deepEqual(twice, [], 'no NAR was stored twice');
  } finally {
    nix[Symbol.dispose]();
  }
});

test('50 hooks at once: 50 entries; one drain stores each path exactly once', async () => {
  const spool = join(work, 'spool-many');
  const store = join(work, 'store-many');
  const nix = makeNixEnv(`extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}\nmax-jobs = 8`);
  try {
    const built = await buildShape(nix, {
      dir: work,
      store,
      salt: randomUUID(),
      shape: { mids: 0, blobs: 0, blobBytes: 0, extra: 10 },
    });
    const outputs = built.extra;
    const hooks = Array.from({ length: 50 }, (_, i) => {
      const outPaths = `${outputs[i % 10] ?? ''} ${outputs[(i + 1) % 10] ?? ''}`;
      return new Promise<number>((resolve) => {
        const child = spawn(FIRN_BIN, ['hook'], {
          stdio: 'ignore',
          env: { ...process.env, FIRN_SPOOL: spool, OUT_PATHS: outPaths, DRV_PATH: '' },
        });
        child.once('close', (code) => {
          resolve(code ?? -1);
        });
      });
    });
    assert.deepEqual(await Promise.all(hooks), Array<number>(50).fill(0));
    const entries = pendingEntries(spool);
    assert.equal(entries.length, 50);
    assert.deepEqual(
      readdirSync(spoolDirs(spool).pending).filter((name) => name.startsWith('.')),
      [],
      'no temp files left',
    );
    const counts = new Map<string, number>();
    for (const entry of entries)
      for (const path of entry.outPaths) counts.set(path, (counts.get(path) ?? 0) + 1);
    assert.deepEqual([...counts.values()], Array<number>(10).fill(10));

    await using server = await startTestServer();
    const result = await drainOnce(spool, store, server.url, await server.token('push'));
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(pendingEntries(spool), []);
    const puts = narPuts(server.log());
    assert.equal(puts.size, 10);
    assert.deepEqual([...puts.values()], Array<number>(10).fill(1));
    assert.deepEqual(await cacheMissing(server.url, outputs), []);
  } finally {
    nix[Symbol.dispose]();
  }
});

test('a full disk under the spool: the hook exits 0, says so, and the build succeeds', async () => {
  const mount = join(work, 'full');
  mkdirSync(mount);
  let mounted = false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mount], { stdio: 'ignore' });
    mounted = true;
  } catch {
    // Not allowed to mount here: a spool whose pending/ is a file breaks writes just as surely.
  }
  try {
    const spool = join(mount, 'spool');
    if (mounted) {
      mkdirSync(spool);
      try {
        writeFileSync(join(mount, 'filler'), Buffer.alloc(1024 * 1024));
      } catch {
        // ENOSPC: the disk is full now, which is the point
      }
    } else {
      mkdirSync(spool, { recursive: true });
      writeFileSync(join(spool, 'pending'), 'a file where a directory should be');
    }
    const direct = await firn(['hook'], {
      env: { FIRN_SPOOL: spool, OUT_PATHS: '/nix/store/aaaa-x', DRV_PATH: '/nix/store/bbbb-x.drv' },
    });
    assert.equal(direct.code, 0);
    assert.match(
      direct.stderr,
      /could not queue \/nix\/store\/aaaa-x for upload: .*\[FIRN_E_SPOOL\]/,
    );
    if (mounted) assert.match(direct.stderr, /ENOSPC|no space left/i);
    assert.match(direct.stderr, /firn push \/nix\/store\/aaaa-x/);

    const nix = nixWithHook(spool, 'full');
    try {
      const built = await buildShape(nix, {
        dir: work,
        store: join(work, 'store-full'),
        salt: randomUUID(),
        shape: { mids: 1, blobs: 0, blobBytes: 0, extra: 1 },
      });
      assert.ok(built.paths.length >= 3);
    } finally {
      nix[Symbol.dispose]();
    }
    assert.deepEqual(pendingEntries(spool), []);
  } finally {
    if (mounted) execFileSync('umount', [mount]);
  }
});

test('bad flags or config never fail the build: the hook exits 0 and says what is wrong', async () => {
  // Nix runs the hook in the daemon's working directory: nothing may appear there.
  const cwd = mkdtempSync(join(work, 'cwd-'));
  const result = await firn(['hook', '--no-such-flag'], {
    env: { FIRN_SPOOL: join(work, 'spool-flags'), OUT_PATHS: '/nix/store/aaaa-x' },
    cwd,
  });
  assert.equal(result.code, 0);
  assert.match(result.stderr, /unknown option.*nothing was queued/is);
  assert.deepEqual(readdirSync(cwd), []);
  assert.match(
    readFileSync(join(work, 'spool-flags', 'hook.log'), 'utf8'),
    /unknown option.*nothing was queued/is,
  );
  const empty = await firn(['hook'], {
    env: { FIRN_SPOOL: join(work, 'spool-flags'), OUT_PATHS: '', DRV_PATH: '' },
  });
  assert.equal(empty.code, 0);
  assert.match(empty.stderr, /nothing to queue/);
  assert.match(readFileSync(join(work, 'spool-flags', 'hook.log'), 'utf8'), /nothing to queue/);

  // `firn hook` alone (as Nix runs it) takes bin/firn's short way: the config file still counts.
  // (A broken one would log to root's default spool, /var/spool/firn, outside this test.)
  const configured = join(work, 'spool-from-config');
  const config = join(work, 'hook-config.toml');
  writeFileSync(config, `[push]\nspool = "${configured}"\n`);
  const viaConfig = await firn(['hook'], {
    env: { FIRN_SPOOL: '', FIRN_CONFIG: config, OUT_PATHS: '/nix/store/aaaa-x', DRV_PATH: '' },
    cwd,
  });
  assert.equal(viaConfig.code, 0, viaConfig.stderr);
  assert.equal(pendingEntries(configured).length, 1);
  assert.deepEqual(readdirSync(cwd), []);
});

/** A TCP proxy to the cache that can play dead: while down it resets every connection. */
async function flakyProxy(
  target: URL,
): Promise<{ url: string; up(): void; close(): Promise<void> }> {
  let isUp = false;
  const sockets = new Set<Socket>();
  const proxy = createNetServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    if (!isUp) {
      socket.resetAndDestroy();
      return;
    }
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(upstream);
    upstream.once('close', () => sockets.delete(upstream));
    socket.pipe(upstream).pipe(socket);
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    up() {
      isUp = true;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}

async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  ms = 20_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('drain as a daemon: waits out a dead cache, picks up new entries, stops cleanly on SIGTERM', async () => {
  const spool = join(work, 'spool-daemon');
  const store = join(work, 'store-daemon');
  const nix = makeNixEnv(`extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}\nmax-jobs = 8`);
  try {
    const built = await buildShape(nix, {
      dir: work,
      store,
      salt: randomUUID(),
      shape: { mids: 2, blobs: 0, blobBytes: 0, extra: 2 },
    });
    await using server = await startTestServer();
    const proxy = await flakyProxy(new URL(server.url));
    try {
      const hook = (outPaths: string): Promise<unknown> =>
        firn(['hook'], { env: { FIRN_SPOOL: spool, OUT_PATHS: outPaths, DRV_PATH: '' } });
      await hook(built.top);
      const child = spawn(
        FIRN_BIN,
        [
          'drain',
          '--spool',
          spool,
          '--store',
          store,
          '--cache',
          proxy.url,
          '--poll-interval',
          '200ms',
          '--retries',
          '0',
        ],
        {
          stdio: ['ignore', 'ignore', 'pipe'],
          env: { ...process.env, FIRN_TOKEN: await server.token('push') },
        },
      );
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const exited = new Promise<number | null>((resolve) => child.once('close', resolve));

      await until('the drain has tried the dead cache', () => stderr.includes('entries wait'));
      assert.equal(pendingEntries(spool).length, 1, 'nothing is lost while the cache is down');
      proxy.up();
      await until(
        'the first entry is drained',
        () => pendingEntries(spool).length === 0 && claimedFiles(spool).length === 0,
      );
      assert.deepEqual(
        await cacheMissing(
          server.url,
          built.paths.filter((path) => !built.extra.includes(path)),
        ),
        [],
      );

      await hook(built.extra.join(' '));
      await until(
        'a new entry is drained',
        async () => (await cacheMissing(server.url, built.extra)).length === 0,
      );
      await until(
        'the spool is empty',
        () => pendingEntries(spool).length === 0 && claimedFiles(spool).length === 0,
      );

      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      assert.deepEqual(claimedFiles(spool), []);
    } finally {
      await proxy.close();
    }
  } finally {
    nix[Symbol.dispose]();
  }
});

test('an entry the cache refuses for good goes to failed/ with the reason; the others are drained', async () => {
  const spool = join(work, 'spool-refused');
  const store = join(work, 'store-refused');
  const nix = makeNixEnv(`extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}\nmax-jobs = 8`);
  try {
    const built = await buildShape(nix, {
      dir: work,
      store,
      salt: randomUUID(),
      shape: { mids: 0, blobs: 1, blobBytes: 256 * 1024, extra: 2 },
    });
    const blob = built.paths.find((path) => path.endsWith('-blob-0')) ?? '';
    const hook = (outPaths: string): Promise<unknown> =>
      firn(['hook'], { env: { FIRN_SPOOL: spool, OUT_PATHS: outPaths, DRV_PATH: '' } });
    await hook(blob);
    await hook(built.extra.join(' '));
    // A cache that takes nothing over 64 KiB: the random blob can never go in.
    await using server = await startTestServer({ env: { FIRN_MAX_NAR_SIZE: '64K' } });
    const result = await drainOnce(spool, store, server.url, await server.token('push'));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /moved to failed\//);
    assert.deepEqual(pendingEntries(spool), []);
    assert.deepEqual(await cacheMissing(server.url, built.extra), []);
    const failed = readdirSync(spoolDirs(spool).failed);
    assert.equal(failed.filter((name) => name.endsWith('.json')).length, 1);
    const reason = failed.find((name) => name.endsWith('.reason')) ?? '';
    assert.match(
      readFileSync(join(spoolDirs(spool).failed, reason), 'utf8'),
      /HTTP 413.*FIRN_E_INPUT_TOO_LARGE/,
    );
  } finally {
    nix[Symbol.dispose]();
  }
});

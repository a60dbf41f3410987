/**
 * `firn serve` killed with SIGKILL at random moments while several uploads stream in (PUTs as
 * `nix copy` sends them, or batches as `firn push` sends them), then
 * restarted on the same data directory, round after round. After every restart nothing
 * half-made is visible: every narinfo served has its whole NAR, no temp file is left, and the
 * interrupted uploads are accepted again. At the end `firn cache verify` and
 * `nix store verify` re-hash everything.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { encodeBatchEntry, PATH_BATCH_CONTENT_TYPE } from '../../src/cache/batch-ingest.ts';
import { firn } from '../helpers/firn.ts';
import { makeNixEnv } from '../helpers/nix.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { bearer, fixtureFromNar, put, randomHashPart, type Fixture } from './upload-fixtures.ts';

const CHAINS = 3;
const CHAIN_LENGTH = 4;
const ROUNDS = 8;

/** The NAR of a small tree made on disk, as `nix-store --dump` writes it. */
async function dumpTree(
  nix: ReturnType<typeof makeNixEnv>,
  dir: string,
  blobBytes: number,
): Promise<Buffer> {
  mkdirSync(join(dir, 'bin'), { recursive: true });
  writeFileSync(join(dir, 'blob'), randomBytes(blobBytes));
  writeFileSync(join(dir, 'README'), `tree ${dir}\n`);
  writeFileSync(join(dir, 'bin', 'run'), '#!/bin/sh\necho run\n');
  chmodSync(join(dir, 'bin', 'run'), 0o755);
  return (await nix.nix('nix-store', ['--dump', dir])).stdout;
}

/** CHAINS chains of CHAIN_LENGTH paths, each referencing the one before it in its chain. */
async function makeChains(
  nix: ReturnType<typeof makeNixEnv>,
  work: string,
  options: {
    readonly name: string;
    readonly blobBytes: () => number;
    readonly compression: (index: number) => 'zstd' | 'none';
  },
): Promise<Fixture[][]> {
  const chains: Fixture[][] = [];
  for (let c = 0; c < CHAINS; c++) {
    const chain: Fixture[] = [];
    for (let i = 0; i < CHAIN_LENGTH; i++) {
      const tree = join(work, 'trees', `${options.name}-${c}-${i}`);
      const nar = await dumpTree(nix, tree, options.blobBytes());
      const previous = chain.at(-1);
      chain.push(
        fixtureFromNar(nar, {
          storePath: `/nix/store/${randomHashPart()}-${options.name}-${c}-${i}`,
          compression: options.compression(i),
          references: previous === undefined ? [] : [previous.baseName],
        }),
      );
    }
    chains.push(chain);
  }
  return chains;
}

/** A temp directory with a chroot Nix beside it, both removed after the test. */
function workspace(
  t: TestContext,
  prefix: string,
): { work: string; nix: ReturnType<typeof makeNixEnv>; dataDir: string } {
  const work = mkdtempSync(join(tmpdir(), prefix));
  const nix = makeNixEnv();
  t.after(() => {
    nix[Symbol.dispose]();
    rmSync(work, { recursive: true, force: true });
  });
  return { work, nix, dataDir: join(work, 'data') };
}

/** `firn cache verify` re-hashes every blob of the stopped cache: all `paths` there, no problem. */
async function assertVerifies(dataDir: string, paths: number): Promise<void> {
  const report = await firn(['cache', 'verify', '--data', dataDir, '--json']);
  assert.equal(report.code, 0, report.stdout.toString() + report.stderr);
  const parsed = JSON.parse(report.stdout.toString()) as { checked: number; problems: unknown[] };
  assert.equal(parsed.checked, paths);
  assert.deepEqual(parsed.problems, []);
}

/** A request body that trickles in 32 KiB pieces (~16 MB/s), so a kill lands mid-upload. */
function tricklingBody(bytes: Buffer): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream({
    async pull(controller) {
      if (offset >= bytes.length) {
        controller.close();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
      controller.enqueue(bytes.subarray(offset, (offset += 32 * 1024)));
    },
  });
}

interface RoundResult {
  readonly statuses: number[];
  readonly networkErrors: number;
}

/**
 * Uploads each chain in order (a path after its reference), the chains in parallel. With
 * `skipServed`, paths the cache already serves are skipped, as `nix copy` does.
 */
async function uploadAll(
  server: TestServer,
  token: string,
  chains: readonly (readonly Fixture[])[],
  skipServed = false,
): Promise<RoundResult> {
  const statuses: number[] = [];
  let networkErrors = 0;
  await Promise.all(
    chains.map(async (chain) => {
      try {
        for (const fixture of chain) {
          if (skipServed) {
            const head = await fetch(`${server.url}/${fixture.hashPart}.narinfo`, {
              method: 'HEAD',
            });
            if (head.status === 200) continue;
          }
          const nar = await fetch(`${server.url}/nar/${fixture.fileName}`, {
            method: 'PUT',
            body: tricklingBody(fixture.file),
            duplex: 'half',
            headers: bearer(token),
          });
          await nar.arrayBuffer();
          statuses.push(nar.status);
          if (!nar.ok) return;
          const narinfo = await put(
            server.url,
            `/${fixture.hashPart}.narinfo`,
            fixture.narinfo,
            token,
          );
          const text = await narinfo.text();
          statuses.push(narinfo.status);
          if (!narinfo.ok)
            throw new Error(`narinfo ${fixture.storePath}: ${narinfo.status} ${text}`);
        }
      } catch (error) {
        // The server was killed under us: expected. Anything else is a finding.
        if (!(error instanceof TypeError && error.message === 'fetch failed')) throw error;
        networkErrors++;
      }
    }),
  );
  return { statuses, networkErrors };
}

/** Every served narinfo has its NAR, whole; returns how many paths are served. */
async function assertConsistent(server: TestServer, fixtures: readonly Fixture[]): Promise<number> {
  let served = 0;
  for (const fixture of fixtures) {
    const narinfo = await fetch(`${server.url}/${fixture.hashPart}.narinfo`);
    const text = await narinfo.text();
    if (narinfo.status === 404) continue;
    assert.equal(narinfo.status, 200, text);
    served++;
    assert.match(text, new RegExp(`^URL: nar/${fixture.fileName}$`, 'm'));
    const nar = await fetch(`${server.url}/nar/${fixture.fileName}`);
    assert.equal(nar.status, 200, `${fixture.storePath} is served without its NAR`);
    const bytes = Buffer.from(await nar.arrayBuffer());
    assert.ok(
      bytes.equals(fixture.file),
      `${fixture.storePath}: the NAR served is not the one uploaded`,
    );
    // A served path's references are served too (closures stay whole).
    for (const reference of fixture.info.references) {
      const ref = await fetch(`${server.url}/${reference.slice(0, 32)}.narinfo`);
      await ref.arrayBuffer();
      assert.equal(ref.status, 200, `${fixture.storePath} is served without ${reference}`);
    }
  }
  return served;
}

test('kill -9 during uploads, restart, repeat: nothing half-made is ever served', async (t) => {
  const { work, nix, dataDir } = workspace(t, 'firn-crash-');

  const chains = await makeChains(nix, work, {
    name: 'crash',
    blobBytes: () => randomInt(1 << 20, 3 << 20),
    compression: () => 'zstd',
  });
  const fixtures = chains.flat();

  let server = await startTestServer({ dataDir });
  const token = await server.token('push');
  let leftBehind = 0;
  let lastServed = 0;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      // Odd rounds skip what is there and make progress; even rounds re-upload everything.
      const uploads = uploadAll(server, token, chains, round % 2 === 1);
      await new Promise((resolve) => setTimeout(resolve, randomInt(30, 450)));
      await server.kill();
      const { statuses } = await uploads;
      for (const status of statuses) assert.ok(status < 300, `status ${status} in round ${round}`);
      leftBehind += readdirSync(join(dataDir, 'blobs', 'tmp')).length;

      server = await startTestServer({ dataDir });
      assert.deepEqual(
        readdirSync(join(dataDir, 'blobs', 'tmp')),
        [],
        'temp files removed on start',
      );
      const served = await assertConsistent(server, fixtures);
      assert.ok(served >= lastServed, 'what was committed stays committed');
      lastServed = served;
      t.diagnostic(`round ${round}: ${served} paths served after the restart`);
    }
    t.diagnostic(`${leftBehind} temp files were left by the kills and removed on restart`);
    assert.ok(leftBehind > 0, 'some kill landed in the middle of an upload');

    // Uninterrupted, every upload goes through, including the ones cut off before.
    const final = await uploadAll(server, token, chains);
    assert.equal(final.networkErrors, 0);
    assert.ok(final.statuses.every((status) => status === 200 || status === 201));
    assert.equal(await assertConsistent(server, fixtures), fixtures.length);

    const key = await server.publicKey();
    const verified = await nix.nixRaw('nix', [
      'store',
      'verify',
      '--store',
      server.url,
      '--option',
      'trusted-public-keys',
      key,
      ...fixtures.map((fixture) => fixture.storePath),
    ]);
    assert.equal(verified.code, 0, verified.stderr);
  } finally {
    await server.kill();
  }
  await assertVerifies(dataDir, fixtures.length);
  assert.deepEqual(readdirSync(join(dataDir, 'blobs', 'tmp')), []);
});

test('kill -9 during batch uploads (firn push), restart, repeat: nothing half-made is ever served', async (t) => {
  const { work, nix, dataDir } = workspace(t, 'firn-crash-batch-');
  // Each chain is one batch, its paths in order: each references the one before, in the batch.
  const chains = await makeChains(nix, work, {
    name: 'batch',
    blobBytes: () => randomInt(1 << 19, 1 << 20),
    compression: (index) => (index % 2 === 0 ? 'zstd' : 'none'),
  });
  const fixtures = chains.flat();
  const postChains = async (target: TestServer, token: string): Promise<number[]> => {
    const statuses: number[] = [];
    await Promise.all(
      chains.map(async (chain) => {
        const body = Buffer.concat(
          chain.flatMap((fixture) => encodeBatchEntry(fixture.narinfo, fixture.file)),
        );
        try {
          const response = await fetch(`${target.url}/api/v1/paths`, {
            method: 'POST',
            body: tricklingBody(body),
            duplex: 'half',
            headers: { ...bearer(token), 'content-type': PATH_BATCH_CONTENT_TYPE },
          });
          await response.arrayBuffer();
          statuses.push(response.status);
        } catch (error) {
          if (!(error instanceof TypeError && error.message === 'fetch failed')) throw error;
        }
      }),
    );
    return statuses;
  };

  let server = await startTestServer({ dataDir });
  const token = await server.token('push');
  let lastServed = 0;
  try {
    for (let round = 0; round < 6; round++) {
      const uploads = postChains(server, token);
      await new Promise((resolve) => setTimeout(resolve, randomInt(30, 400)));
      await server.kill();
      for (const status of await uploads) assert.equal(status, 200, `round ${round}`);
      server = await startTestServer({ dataDir });
      assert.deepEqual(readdirSync(join(dataDir, 'blobs', 'tmp')), []);
      const served = await assertConsistent(server, fixtures);
      assert.ok(served >= lastServed, 'what was committed stays committed');
      lastServed = served;
      t.diagnostic(`round ${round}: ${served} paths served after the restart`);
    }
    // Uninterrupted, every batch goes through whole.
    assert.deepEqual(await postChains(server, token), Array<number>(CHAINS).fill(200));
    assert.equal(await assertConsistent(server, fixtures), fixtures.length);
  } finally {
    await server.kill();
  }
  await assertVerifies(dataDir, fixtures.length);
});

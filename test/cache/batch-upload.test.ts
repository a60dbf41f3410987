/**
 * `POST /api/v1/paths` against the real `firn serve`: a batch of real NARs built by Nix is
 * stored in one request and substituted back by the real `nix copy --from`; each entry gets
 * every check of the NAR and narinfo PUTs, refusals stay per entry, and a body that is not
 * exactly a batch (cut, padded, oversized, unauthorised, abandoned) stores nothing at all.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  MAX_BATCH_BYTES,
  MAX_BATCH_ENTRIES,
  PATH_BATCH_CONTENT_TYPE,
  encodeBatchEntry,
} from '../../src/cache/batch-ingest.ts';
import type { Compression } from '../../src/cache/compression.ts';
import { formatHash } from '../../src/nix/hash.ts';
import { encodeNix32 } from '../../src/nix/nix-base32.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { SANDBOX_PATHS, buildShape } from '../push/fixtures.ts';
import {
  bearer,
  fixtureFromNar,
  makeFixture,
  sha256,
  stats,
  withField,
  type Fixture,
} from './upload-fixtures.ts';

interface EntryResult {
  readonly storePath: string | null;
  readonly status: 'created' | 'present' | 'refused';
  readonly httpStatus?: number;
  readonly code?: string;
  readonly message?: string;
  readonly hint?: string;
}

interface Part {
  readonly narinfo: string;
  readonly file: Buffer;
}

let work: string;
let nix: NixEnv;
let store: string;
let server: TestServer;
let token: string;
let readToken: string;
let cacheKey: string;
/** The built closure, dependencies first: lib, mid-0..2, top. */
let closure: Fixture[];

function batchBody(parts: readonly Part[]): Buffer {
  return Buffer.concat(parts.flatMap((part) => encodeBatchEntry(part.narinfo, part.file)));
}

function postBatch(
  body: Uint8Array,
  auth: string | null = token,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${server.url}/api/v1/paths`, {
    method: 'POST',
    body,
    headers: {
      'content-type': PATH_BATCH_CONTENT_TYPE,
      ...(auth === null ? {} : bearer(auth)),
      ...headers,
    },
  });
}

async function resultsOf(response: Response): Promise<EntryResult[]> {
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return (JSON.parse(text) as { results: EntryResult[] }).results;
}

/** An error answer: its status and its `[FIRN_E_…]` code; the message is returned. */
async function assertRefused(response: Response, status: number, code: string): Promise<string> {
  const text = await response.text();
  assert.equal(response.status, status, text);
  assert.match(text, new RegExp(`\\[${code}\\]`));
  return text;
}

function blobNames(sub: string): string[] {
  const dir = join(server.dataDir, 'blobs', sub);
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/** What the cache holds, to show that a refused request left nothing behind. */
async function holdings(): Promise<unknown> {
  return { stats: await stats(server.url), nars: blobNames('nar'), tmp: blobNames('tmp') };
}

async function assertNothingStored(before: unknown): Promise<void> {
  // A temp file of an abandoned upload goes shortly after its connection.
  const deadline = Date.now() + 3000;
  while (blobNames('tmp').length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.deepEqual(await holdings(), before);
}

async function narinfoStatus(fixture: Fixture): Promise<number> {
  const response = await fetch(`${server.url}/${fixture.hashPart}.narinfo`);
  await response.arrayBuffer();
  return response.status;
}

async function refusedCount(): Promise<Map<string, number>> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const counts = new Map<string, number>();
  for (const match of text.matchAll(/^firn_uploads_refused_total\{reason="([A-Z_]+)"\} (\d+)$/gm)) {
    counts.set(match[1] ?? '', Number(match[2]));
  }
  return counts;
}

/** Sends the request head and `body`, then hangs up without waiting for an answer. */
function sendAndHangUp(head: string, body: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(server.port, '127.0.0.1');
    socket.on('error', reject);
    socket.on('close', () => {
      resolve();
    });
    socket.once('connect', () => {
      socket.write(head);
      socket.write(body, () => {
        setTimeout(() => socket.destroy(), 100);
      });
    });
  });
}

function requestHead(length: number): string {
  return (
    `POST /api/v1/paths HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n` +
    `Content-Type: ${PATH_BATCH_CONTENT_TYPE}\r\nContent-Length: ${length}\r\n\r\n`
  );
}

/** A store path of the built closure as a batch entry, its NAR dumped by Nix. */
async function fixtureOf(path: string, compression: Compression): Promise<Fixture> {
  const [nar, info] = await Promise.all([
    nix.nix('nix', ['store', 'dump-path', '--store', store, path]),
    nix.nix('nix', ['path-info', '--store', store, '--json', path]),
  ]);
  const [meta] = JSON.parse(info.stdout.toString('utf8')) as {
    references: string[];
    deriver?: string;
  }[];
  const base = (full: string): string => full.slice('/nix/store/'.length);
  return fixtureFromNar(nar.stdout, {
    storePath: path,
    compression,
    references: (meta?.references ?? []).map(base),
    ...(meta?.deriver === undefined ? {} : { deriver: base(meta.deriver) }),
  });
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'firn-batch-upload-'));
  nix = makeNixEnv(`extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}`);
  store = join(nix.dir, 'store');
  const built = await buildShape(nix, {
    dir: work,
    store,
    salt: randomUUID(),
    shape: { mids: 3, blobs: 0, blobBytes: 0, extra: 0 },
  });
  const rank = (path: string): number =>
    path.endsWith('-lib') ? 0 : /-mid-\d+$/.test(path) ? 1 : 2;
  const ordered = [...built.paths].sort((a, b) => rank(a) - rank(b));
  assert.equal(ordered.length, 5, ordered.join(' '));
  // Both kinds a client sends: zstd (node:zlib) and uncompressed.
  closure = await Promise.all(
    ordered.map((path, i) => fixtureOf(path, i % 2 === 0 ? 'zstd' : 'none')),
  );
  server = await startTestServer();
  token = await server.token('push');
  readToken = await server.token('read');
  cacheKey = await server.publicKey();
});

after(async () => {
  await server[Symbol.asyncDispose]();
  nix[Symbol.dispose]();
  rmSync(work, { recursive: true, force: true });
});

describe('a batch of a real closure', () => {
  test('is stored in one request and nix copy --from substitutes it, trusting the cache key', async () => {
    const results = await resultsOf(await postBatch(batchBody(closure)));
    assert.deepEqual(
      results,
      closure.map((fixture) => ({ storePath: fixture.storePath, status: 'created' })),
    );
    assert.deepEqual(await stats(server.url), {
      paths: 5,
      nars: 5,
      narBytes: closure.reduce((sum, fixture) => sum + fixture.file.length, 0),
    });
    const top = closure.at(-1)?.storePath ?? '';
    const fresh = join(work, `fresh-${randomUUID()}`);
    const copied = await nix.nixRaw('nix', [
      'copy',
      '--from',
      server.url,
      '--to',
      fresh,
      '--option',
      'trusted-public-keys',
      cacheKey,
      top,
    ]);
    assert.equal(copied.code, 0, copied.stderr);
    const [there, here] = await Promise.all(
      [store, fresh].map((where) =>
        nix.nix('nix', ['path-info', '--store', where, '--json', '-r', top]),
      ),
    );
    const facts = (json: Buffer | undefined): string[] =>
      (
        JSON.parse(json?.toString() ?? '[]') as {
          path: string;
          narHash: string;
          references: string[];
        }[]
      )
        .map((info) => `${info.path} ${info.narHash} ${info.references.join(',')}`)
        .sort();
    assert.deepEqual(facts(here?.stdout), facts(there?.stdout));
    assert.equal(facts(here?.stdout).length, 5);
    const sigs = await nix.nix('nix', ['path-info', '--store', fresh, '--sigs', '-r', top]);
    assert.equal(sigs.stdout.toString().match(/test-cache-1:/g)?.length, 5);
    assert.match(server.log(), /"msg":"path added"/);
  });

  test('sent again, every entry is present and nothing is written', async () => {
    const before = await holdings();
    const results = await resultsOf(await postBatch(batchBody(closure)));
    assert.deepEqual(
      results,
      closure.map((fixture) => ({ storePath: fixture.storePath, status: 'present' })),
    );
    assert.deepEqual(await holdings(), before);
  });
});

describe('entries the PUTs would refuse', () => {
  test('are refused one by one with the PUTs codes; the other entries are stored', async () => {
    const lib = makeFixture({ name: 'lib' });
    const mid = makeFixture({ name: 'mid', references: [lib.baseName], self: true });
    const [narHash, fileHash, bytes, url, external, compression, wrongCompression, conflict] =
      Array.from({ length: 8 }, (_, i) => makeFixture({ name: `bad${i}` }));
    const plain = makeFixture({ name: 'plain', compression: 'none' });
    const orphan = makeFixture({ name: 'orphan', references: [makeFixture().baseName] });
    const existing = closure[0];
    assert.ok(narHash && fileHash && bytes && url && external && compression && wrongCompression);
    assert.ok(conflict && existing);
    const corrupt = Buffer.from(bytes.file);
    corrupt[corrupt.length - 1] = (corrupt.at(-1) ?? 0) ^ 1;
    const plainAsZstd = `${encodeNix32(sha256(plain.file).digest)}.nar.zst`;
    const parts: [Part, string | undefined][] = [
      [lib, undefined],
      [
        {
          narinfo: withField(narHash.narinfo, 'NarHash', formatHash(sha256(Buffer.from('x')))),
          file: narHash.file,
        },
        'FIRN_E_UPLOAD_HASH_MISMATCH',
      ],
      [
        {
          narinfo: withField(fileHash.narinfo, 'FileHash', formatHash(sha256(Buffer.from('x')))),
          file: fileHash.file,
        },
        'FIRN_E_UPLOAD_HASH_MISMATCH',
      ],
      [{ narinfo: bytes.narinfo, file: corrupt }, 'FIRN_E_UPLOAD_HASH_MISMATCH'],
      [{ narinfo: orphan.narinfo, file: orphan.file }, 'FIRN_E_UPLOAD_REFERENCE_MISSING'],
      [
        { narinfo: withField(url.narinfo, 'URL', `nar/${mid.fileName}`), file: url.file },
        'FIRN_E_UPLOAD_HASH_MISMATCH',
      ],
      [
        {
          narinfo: withField(external.narinfo, 'URL', `https://elsewhere/${external.fileName}`),
          file: external.file,
        },
        'FIRN_E_BAD_REQUEST',
      ],
      [
        {
          narinfo: withField(
            withField(
              withField(compression.narinfo, 'URL', `nar/${plainAsZstd}`),
              'FileHash',
              formatHash(sha256(plain.file)),
            ),
            'FileSize',
            String(plain.file.length),
          ),
          file: plain.file,
        },
        'FIRN_E_UPLOAD_HASH_MISMATCH',
      ],
      [
        {
          narinfo: withField(wrongCompression.narinfo, 'Compression', 'xz'),
          file: wrongCompression.file,
        },
        'FIRN_E_BAD_REQUEST',
      ],
      [
        {
          narinfo: withField(conflict.narinfo, 'StorePath', existing.storePath),
          file: conflict.file,
        },
        'FIRN_E_UPLOAD_CONFLICT',
      ],
      [{ narinfo: 'not a narinfo\n', file: plain.file }, 'FIRN_E_NARINFO_INVALID'],
      [mid, undefined],
    ];
    const refusedBefore = await refusedCount();
    const results = await resultsOf(await postBatch(batchBody(parts.map(([part]) => part))));
    assert.deepEqual(
      results.map((result) => result.code ?? result.status),
      parts.map(([, code]) => code ?? 'created'),
    );
    for (const [i, result] of results.entries()) {
      if (result.status !== 'refused') continue;
      assert.ok(result.message !== undefined && result.message.length > 0, JSON.stringify(result));
      const expected = i === 10 ? null : parts[i]?.[0].narinfo.match(/^StorePath: (.*)$/m)?.[1];
      assert.equal(result.storePath, expected);
    }
    assert.match(results[4]?.message ?? '', /lacks 1 of its references/);
    assert.match(results[7]?.message ?? '', /does not decompress/);
    assert.match(results[9]?.hint ?? '', /non-reproducible/);
    // Each refusal carries the status its own PUT would have had.
    assert.equal(results[9]?.httpStatus, 409);
    const hashRefusal = results.find((result) => result.code === 'FIRN_E_UPLOAD_HASH_MISMATCH');
    assert.equal(hashRefusal?.httpStatus, 400);
    // Stored: lib and mid (which references lib, an earlier entry), and nothing refused.
    assert.equal(await narinfoStatus(lib), 200);
    assert.equal(await narinfoStatus(mid), 200);
    for (const fixture of [narHash, fileHash, bytes, orphan, url, external, compression]) {
      assert.equal(await narinfoStatus(fixture), 404, fixture.storePath);
    }
    // NARs whose bytes were refused are not kept; a narinfo naming no nar/ file sent none.
    for (const name of [bytes.fileName, plainAsZstd, external.fileName]) {
      assert.ok(!blobNames('nar').includes(name), name);
    }
    const served = await (await fetch(`${server.url}/${existing.hashPart}.narinfo`)).text();
    assert.match(served, new RegExp(`^URL: nar/${existing.fileName}$`, 'm'));
    // One refusal counted per refused entry, by code.
    const refusedAfter = await refusedCount();
    const delta = (code: string): number =>
      (refusedAfter.get(code) ?? 0) - (refusedBefore.get(code) ?? 0);
    assert.equal(delta('FIRN_E_UPLOAD_HASH_MISMATCH'), 5);
    assert.equal(delta('FIRN_E_BAD_REQUEST'), 2);
    assert.equal(delta('FIRN_E_UPLOAD_REFERENCE_MISSING'), 1);
    assert.equal(delta('FIRN_E_UPLOAD_CONFLICT'), 1);
    assert.equal(delta('FIRN_E_NARINFO_INVALID'), 1);
    assert.match(server.log(), /"code":"FIRN_E_UPLOAD_CONFLICT".*"msg":"path refused"/);
  });
});

describe('bodies that are not a whole batch store nothing', () => {
  const framing: [string, () => Buffer, RegExp][] = [
    [
      'a cut body',
      () => {
        const body = batchBody([makeFixture(), makeFixture()]);
        return body.subarray(0, body.length - 3);
      },
      /entry 1 at byte \d+: its NAR file of \d+ bytes runs past the end/,
    ],
    [
      'trailing garbage',
      () => Buffer.concat([batchBody([makeFixture()]), Buffer.from('\n\n\n')]),
      /entry 1 at byte \d+: the body ends inside the narinfo length \(3 of 4 bytes\)/,
    ],
    [
      'a huge narinfo length',
      () => {
        const second = batchBody([makeFixture()]);
        second.writeUInt32BE(0xfffffff0, 0);
        return Buffer.concat([batchBody([makeFixture()]), second]);
      },
      /entry 1 at byte \d+: its narinfo length 4294967280 exceeds the limit/,
    ],
    [
      'a zero narinfo length',
      () => Buffer.concat([batchBody([makeFixture()]), Buffer.alloc(8)]),
      /entry 1 at byte \d+: its narinfo length is 0/,
    ],
    [
      `more than ${MAX_BATCH_ENTRIES} entries`,
      () => {
        const fixture = makeFixture();
        const tiny = batchBody([{ narinfo: 'x', file: Buffer.alloc(0) }]);
        return Buffer.concat([
          batchBody([fixture]),
          ...Array.from({ length: MAX_BATCH_ENTRIES }, () => tiny),
        ]);
      },
      new RegExp(
        `entry ${MAX_BATCH_ENTRIES} at byte \\d+: the batch has more than ${MAX_BATCH_ENTRIES} entries`,
      ),
    ],
  ];
  for (const [what, body, message] of framing) {
    test(`${what} is 400 FIRN_E_BAD_REQUEST`, async () => {
      const before = await holdings();
      const text = await assertRefused(await postBatch(body()), 400, 'FIRN_E_BAD_REQUEST');
      assert.match(text, message);
      assert.match(text, /nothing was stored/);
      await assertNothingStored(before);
    });
  }

  test('a Content-Length over 64 MiB is 413 before any byte is read', async () => {
    const before = await holdings();
    const response = await new Promise<string>((resolve, reject) => {
      const socket = connect(server.port, '127.0.0.1');
      let received = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (received += chunk));
      socket.on('error', reject);
      socket.on('close', () => {
        resolve(received);
      });
      socket.once('connect', () => {
        socket.write(requestHead(MAX_BATCH_BYTES + 1));
        socket.write(batchBody([makeFixture()]));
      });
    });
    assert.match(response, /^HTTP\/1\.1 413 /);
    assert.match(response, /larger than 67108864 bytes \[FIRN_E_INPUT_TOO_LARGE\]/);
    await assertNothingStored(before);
  });

  test('a client that hangs up midway leaves no blob, no temp file and no row', async () => {
    const before = await holdings();
    const body = batchBody([makeFixture({ size: 100_000 }), makeFixture({ size: 2 << 20 })]);
    await sendAndHangUp(requestHead(body.length), body.subarray(0, body.length - 1000));
    await assertNothingStored(before);
    // The server still takes a whole batch afterwards.
    const fixture = makeFixture();
    const results = await resultsOf(await postBatch(batchBody([fixture])));
    assert.deepEqual(results, [{ storePath: fixture.storePath, status: 'created' }]);
  });

  test('no token is 401, a read token 403, another Content-Type 400', async () => {
    const before = await holdings();
    const body = batchBody([makeFixture()]);
    const none = await postBatch(body, null);
    await assertRefused(none, 401, 'FIRN_E_AUTH_REQUIRED');
    assert.match(none.headers.get('www-authenticate') ?? '', /^Basic /);
    await assertRefused(await postBatch(body, readToken), 403, 'FIRN_E_AUTH_FORBIDDEN');
    await assertRefused(
      await postBatch(body, token, { 'content-type': 'application/json' }),
      400,
      'FIRN_E_BAD_REQUEST',
    );
    await assertNothingStored(before);
  });

  test('other methods on the endpoint are 404, so a client falls back to the PUTs', async () => {
    const response = await fetch(`${server.url}/api/v1/paths`, {
      method: 'PUT',
      body: 'x',
      headers: bearer(token),
    });
    await assertRefused(response, 404, 'FIRN_E_NOT_FOUND');
  });
});

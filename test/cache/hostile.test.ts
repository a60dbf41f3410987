/**
 * `firn serve` against uploads and requests a careless or hostile client could send: every
 * refusal has the right status and a FIRN_E_ code, nothing half-made is ever stored or served,
 * no temp file outlives a broken upload, and no path escapes the data directory.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { zstdCompressSync } from 'node:zlib';
import { formatHash } from '../../src/nix/hash.ts';
import { encodeNix32 } from '../../src/nix/nix-base32.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import {
  bearer,
  makeFixture,
  put,
  randomHashPart,
  rawRequest,
  sha256,
  stats,
  upload,
  withField,
  type Fixture,
  type RawResponse,
} from './upload-fixtures.ts';

let server: TestServer;
let token: string;
let readToken: string;

before(async () => {
  server = await startTestServer();
  token = await server.token('push');
  readToken = await server.token('read');
});

after(async () => {
  await server[Symbol.asyncDispose]();
});

function tempFiles(): string[] {
  return readdirSync(join(server.dataDir, 'blobs', 'tmp'));
}

/** Temp files of aborted uploads disappear shortly after the connection does. */
async function assertNoTempFiles(): Promise<void> {
  const deadline = Date.now() + 3000;
  while (tempFiles().length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.deepEqual(tempFiles(), []);
}

async function assertRefused(
  response: Response | RawResponse,
  status: number,
  code: string,
  mentions?: RegExp,
): Promise<string> {
  const body =
    response instanceof Response ? await response.text() : response.body.toString('utf8');
  assert.equal(response.status, status, body);
  assert.match(body, new RegExp(`\\[${code}\\]`));
  if (mentions !== undefined) assert.match(body, mentions);
  const encoding =
    response instanceof Response
      ? response.headers.get('content-encoding')
      : response.headers['content-encoding'];
  assert.equal(encoding ?? null, null);
  return body;
}

async function narinfoStatus(fixture: Fixture): Promise<number> {
  const response = await fetch(`${server.url}/${fixture.hashPart}.narinfo`);
  await response.arrayBuffer();
  return response.status;
}

async function putNar(fixture: Fixture, body: Uint8Array = fixture.file): Promise<Response> {
  return put(server.url, `/nar/${fixture.fileName}`, body, token);
}

async function putNarInfo(fixture: Fixture, text = fixture.narinfo): Promise<Response> {
  return put(server.url, `/${fixture.hashPart}.narinfo`, text, token);
}

/** Sends `head` (request line and headers) then `parts` with pauses, over one raw socket. */
function rawUpload(
  parts: readonly { readonly bytes: Uint8Array | string; readonly delayMs?: number }[],
  end: 'wait' | 'destroy' | 'half-close',
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(server.port, '127.0.0.1');
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0), text: received });
    });
    socket.once('connect', () => {
      void (async () => {
        for (const part of parts) {
          if (part.delayMs !== undefined)
            await new Promise((done) => setTimeout(done, part.delayMs));
          socket.write(part.bytes);
        }
        if (end === 'destroy') socket.destroy();
        else if (end === 'half-close') socket.end();
        else {
          // Wait for a complete response, then close.
          const started = Date.now();
          while (!received.includes('\r\n\r\n') && Date.now() - started < 10_000) {
            await new Promise((done) => setTimeout(done, 10));
          }
          await new Promise((done) => setTimeout(done, 50));
          socket.end();
        }
      })();
    });
  });
}

function requestHead(method: string, path: string, length: number): string {
  return (
    `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n` +
    `Content-Length: ${length}\r\nConnection: close\r\n\r\n`
  );
}

describe('narinfos that do not describe their NAR', () => {
  const cases: [string, (fixture: Fixture) => string, number, string][] = [
    [
      'NarHash',
      (f) => withField(f.narinfo, 'NarHash', formatHash(sha256(Buffer.from('other')))),
      400,
      'FIRN_E_UPLOAD_HASH_MISMATCH',
    ],
    [
      'NarSize',
      (f) => withField(f.narinfo, 'NarSize', String(f.nar.length + 8)),
      400,
      'FIRN_E_UPLOAD_SIZE_MISMATCH',
    ],
    [
      'FileHash',
      (f) => withField(f.narinfo, 'FileHash', formatHash(sha256(Buffer.from('other')))),
      400,
      'FIRN_E_UPLOAD_HASH_MISMATCH',
    ],
    [
      'FileSize',
      (f) => withField(f.narinfo, 'FileSize', String(f.file.length - 1)),
      400,
      'FIRN_E_UPLOAD_SIZE_MISMATCH',
    ],
    ['Compression', (f) => withField(f.narinfo, 'Compression', 'xz'), 400, 'FIRN_E_BAD_REQUEST'],
  ];
  for (const [field, tamper, status, code] of cases) {
    test(`a wrong ${field} is refused and nothing is served`, async () => {
      const fixture = makeFixture();
      assert.equal((await putNar(fixture)).status, 201);
      const before = await stats(server.url);
      await assertRefused(await putNarInfo(fixture, tamper(fixture)), status, code, /narinfo for/);
      assert.equal(await narinfoStatus(fixture), 404);
      assert.equal((await stats(server.url)).paths, before.paths);
      // The honest narinfo is still accepted afterwards.
      assert.equal((await putNarInfo(fixture)).status, 201);
      assert.equal(await narinfoStatus(fixture), 200);
    });
  }

  test('a narinfo whose NAR was never uploaded is FIRN_E_UPLOAD_NAR_MISSING', async () => {
    const fixture = makeFixture();
    await assertRefused(
      await putNarInfo(fixture),
      400,
      'FIRN_E_UPLOAD_NAR_MISSING',
      new RegExp(fixture.fileName),
    );
    assert.equal(await narinfoStatus(fixture), 404);
  });

  test('a narinfo whose references are missing names them, and is accepted once they exist', async () => {
    const dep = makeFixture({ name: 'dep' });
    const app = makeFixture({ name: 'app', references: [dep.baseName], self: true });
    assert.equal((await putNar(app)).status, 201);
    await assertRefused(
      await putNarInfo(app),
      400,
      'FIRN_E_UPLOAD_REFERENCE_MISSING',
      new RegExp(`lacks 1 of its references \\(${dep.baseName}\\)`),
    );
    assert.equal(await narinfoStatus(app), 404);
    const uploaded = await upload(server.url, token, dep);
    assert.equal(uploaded.narinfo, 201, uploaded.narinfoBody);
    assert.equal((await putNarInfo(app)).status, 201, 'a self-reference needs nothing');
    assert.equal(await narinfoStatus(app), 200);
  });

  test('a narinfo sent to the URL of another path is FIRN_E_UPLOAD_PATH_MISMATCH', async () => {
    const fixture = makeFixture();
    await putNar(fixture);
    const elsewhere = randomHashPart();
    await assertRefused(
      await put(server.url, `/${elsewhere}.narinfo`, fixture.narinfo, token),
      400,
      'FIRN_E_UPLOAD_PATH_MISMATCH',
      new RegExp(`PUT it at /${fixture.hashPart}\\.narinfo`),
    );
    const response = await fetch(`${server.url}/${elsewhere}.narinfo`);
    assert.equal(response.status, 404);
  });

  test('invalid store paths and malformed narinfos are refused with the line', async () => {
    const fixture = makeFixture();
    await putNar(fixture);
    const bad: [string, string][] = [
      [withField(fixture.narinfo, 'StorePath', '/nix/store/tooshort-x'), 'FIRN_E_'],
      [withField(fixture.narinfo, 'StorePath', `/other/store/${fixture.baseName}`), 'FIRN_E_'],
      [withField(fixture.narinfo, 'References', 'not-a-store-path'), 'FIRN_E_'],
      [fixture.narinfo.replace(/\n$/, ''), 'FIRN_E_NARINFO_INVALID'],
      [fixture.narinfo.replace(/^NarHash: .*\n/m, ''), 'FIRN_E_NARINFO_INVALID'],
      ['\u0000\u0001\u0002', 'FIRN_E_NARINFO_INVALID'],
      ['', 'FIRN_E_NARINFO_INVALID'],
    ];
    for (const [text, code] of bad) {
      const response = await putNarInfo(fixture, text);
      const body = await response.text();
      assert.equal(response.status, 400, `${JSON.stringify(text.slice(0, 80))}: ${body}`);
      assert.ok(body.includes(code), body);
    }
    assert.equal(await narinfoStatus(fixture), 404);
    // A narinfo URL whose hash part is not one is not a narinfo at all.
    for (const name of [
      'short.narinfo',
      `${'e'.repeat(32)}.narinfo`,
      `${'A'.repeat(32)}.narinfo`,
    ]) {
      await assertRefused(
        await put(server.url, `/${name}`, fixture.narinfo, token),
        404,
        'FIRN_E_NOT_FOUND',
      );
    }
  });

  test('a narinfo over 1 MiB is 413, whether or not it declares its length', async () => {
    const fixture = makeFixture();
    const huge = fixture.narinfo + `X-Padding: ${'x'.repeat(1024 * 1024)}\n`;
    await assertRefused(await putNarInfo(fixture, huge), 413, 'FIRN_E_INPUT_TOO_LARGE');
    const chunked = await rawRequest(server.port, 'PUT', `/${fixture.hashPart}.narinfo`, {
      headers: { ...bearer(token), 'transfer-encoding': 'chunked' },
      body: huge,
    });
    await assertRefused(chunked, 413, 'FIRN_E_INPUT_TOO_LARGE');
    assert.equal((await fetch(`${server.url}/nix-cache-info`)).status, 200);
  });
});

describe('NAR uploads that are not what they claim', () => {
  test('a NAR whose bytes do not hash to its file name is refused and not kept', async () => {
    const fixture = makeFixture();
    const other = makeFixture();
    await assertRefused(
      await putNar(fixture, other.file),
      400,
      'FIRN_E_UPLOAD_HASH_MISMATCH',
      /not to the hash in its name/,
    );
    const head = await fetch(`${server.url}/nar/${fixture.fileName}`, { method: 'HEAD' });
    assert.equal(head.status, 404);
    await assertRefused(await putNarInfo(fixture), 400, 'FIRN_E_UPLOAD_NAR_MISSING');
    await assertNoTempFiles();
  });

  test('a .nar.zst that is not zstd is refused even when its name hash is right', async () => {
    const fixture = makeFixture({ compression: 'none' });
    const fileName = `${encodeNix32(sha256(fixture.file).digest)}.nar.zst`;
    await assertRefused(
      await put(server.url, `/nar/${fileName}`, fixture.file, token),
      400,
      'FIRN_E_UPLOAD_HASH_MISMATCH',
      /does not decompress/,
    );
    assert.equal((await fetch(`${server.url}/nar/${fileName}`, { method: 'HEAD' })).status, 404);
    await assertNoTempFiles();
  });

  test('bytes that decompress but are not a NAR are refused with the NAR error', async () => {
    const cases: [Buffer, string][] = [
      [randomBytes(5000), 'FIRN_E_NAR_BAD_MAGIC'],
      [Buffer.concat([makeFixture().nar, Buffer.alloc(8)]), 'FIRN_E_NAR_TRAILING_DATA'],
      [makeFixture().nar.subarray(0, 100), 'FIRN_E_NAR_TRUNCATED'],
    ];
    for (const [nar, code] of cases) {
      const file = zstdCompressSync(nar);
      const fileName = `${encodeNix32(sha256(file).digest)}.nar.zst`;
      await assertRefused(
        await put(server.url, `/nar/${fileName}`, file, token),
        400,
        code,
        /not a valid NAR/,
      );
      assert.equal((await fetch(`${server.url}/nar/${fileName}`, { method: 'HEAD' })).status, 404);
    }
    await assertNoTempFiles();
  });

  test('a truncated zstd stream is refused', async () => {
    const fixture = makeFixture({ size: 100_000 });
    const cut = fixture.file.subarray(0, fixture.file.length - 10);
    const fileName = `${encodeNix32(sha256(cut).digest)}.nar.zst`;
    const response = await put(server.url, `/nar/${fileName}`, cut, token);
    await assertRefused(response, 400, 'FIRN_E_UPLOAD_HASH_MISMATCH');
    await assertNoTempFiles();
  });

  test('bad NAR file names are refused', async () => {
    for (const name of [
      'x.nar',
      `${'0'.repeat(52)}.nar.lz4`,
      `${'0'.repeat(51)}.nar`,
      '0'.repeat(52),
    ]) {
      const response = await put(server.url, `/nar/${name}`, 'x', token);
      const body = await response.text();
      assert.ok([400, 404].includes(response.status), `${name}: ${response.status}`);
      assert.match(body, /FIRN_E_/);
    }
    await assertNoTempFiles();
  });
});

describe('broken connections', () => {
  for (const end of ['destroy', 'half-close'] as const) {
    test(`a NAR upload cut off midway (${end}) leaves no temp file and no record`, async () => {
      const fixture = makeFixture({ size: 4 << 20 });
      const before = await stats(server.url);
      const half = fixture.file.subarray(0, fixture.file.length >> 1);
      await rawUpload(
        [
          { bytes: requestHead('PUT', `/nar/${fixture.fileName}`, fixture.file.length) },
          { bytes: half },
          { bytes: Buffer.alloc(0), delayMs: 100 },
        ],
        end,
      );
      await assertNoTempFiles();
      assert.deepEqual(await stats(server.url), before);
      const head = await fetch(`${server.url}/nar/${fixture.fileName}`, { method: 'HEAD' });
      assert.equal(head.status, 404);
      // The server still serves, and the same upload succeeds whole.
      const again = await upload(server.url, token, fixture);
      assert.deepEqual([again.nar, again.narinfo], [201, 201], again.narinfoBody);
    });
  }

  test('a narinfo upload cut off midway stores nothing', async () => {
    const fixture = makeFixture();
    await putNar(fixture);
    const body = Buffer.from(fixture.narinfo);
    await rawUpload(
      [
        { bytes: requestHead('PUT', `/${fixture.hashPart}.narinfo`, body.length) },
        { bytes: body.subarray(0, 40) },
      ],
      'destroy',
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(await narinfoStatus(fixture), 404);
  });

  test('a slow body (1 byte every 100 ms for a second, then the rest) still works', async () => {
    const fixture = makeFixture({ size: 200_000 });
    const bytes = fixture.file;
    const slow = Array.from({ length: 10 }, (_, i) => ({
      bytes: bytes.subarray(i, i + 1),
      delayMs: 100,
    }));
    const response = await rawUpload(
      [
        { bytes: requestHead('PUT', `/nar/${fixture.fileName}`, bytes.length) },
        ...slow,
        { bytes: bytes.subarray(10) },
      ],
      'wait',
    );
    assert.equal(response.status, 201, response.text);
    assert.equal((await putNarInfo(fixture)).status, 201);
    assert.equal(await narinfoStatus(fixture), 200);
  });
});

describe('repeated and conflicting uploads', () => {
  test('10 identical uploads in parallel all succeed and store the path once', async () => {
    const fixture = makeFixture({ size: 2 << 20 });
    const before = await stats(server.url);
    const results = await Promise.all(
      Array.from({ length: 10 }, () => upload(server.url, token, fixture)),
    );
    for (const result of results) {
      assert.ok(result.nar === 200 || result.nar === 201, `NAR ${result.nar}`);
      assert.ok(result.narinfo === 200 || result.narinfo === 201, result.narinfoBody);
    }
    assert.equal(results.filter((result) => result.narinfo === 201).length, 1);
    const now = await stats(server.url);
    assert.equal(now.paths, before.paths + 1);
    assert.equal(now.nars, before.nars + 1);
    assert.equal(now.narBytes, before.narBytes + fixture.file.length);
    const nar = await fetch(`${server.url}/nar/${fixture.fileName}`);
    assert.ok(Buffer.from(await nar.arrayBuffer()).equals(fixture.file));
    await assertNoTempFiles();
  });

  test('a stored NAR is not written again; other bytes under its name are refused', async () => {
    const fixture = makeFixture({ name: 'stored-once', compression: 'none' });
    assert.equal((await putNar(fixture)).status, 201);
    const blob = join(server.dataDir, 'blobs', 'nar', fixture.fileName);
    const written = statSync(blob);
    assert.equal((await putNar(fixture)).status, 200);
    assert.equal(statSync(blob).ino, written.ino, 'the stored file was not replaced');
    const other = Buffer.from(fixture.file);
    other.writeUInt8(other.readUInt8(other.length - 20) ^ 1, other.length - 20);
    await assertRefused(await putNar(fixture, other), 400, 'FIRN_E_UPLOAD_HASH_MISMATCH');
    assert.ok(readFileSync(blob).equals(fixture.file), 'the stored NAR is unchanged');
    assert.equal((await putNarInfo(fixture)).status, 201);
  });

  test('re-uploading the same path is 200; different contents are 409 and the first stays', async () => {
    const first = makeFixture({ name: 'nondeterministic' });
    assert.deepEqual(Object.values(await upload(server.url, token, first)).slice(0, 2), [201, 201]);
    const again = await upload(server.url, token, first);
    assert.deepEqual([again.nar, again.narinfo], [200, 200]);

    const second = makeFixture();
    const different = withField(
      withField(
        withField(
          withField(
            withField(second.narinfo, 'StorePath', first.storePath),
            'URL',
            `nar/${second.fileName}`,
          ),
          'FileHash',
          formatHash(sha256(second.file)),
        ),
        'NarHash',
        formatHash(sha256(second.nar)),
      ),
      'NarSize',
      String(second.nar.length),
    );
    assert.equal((await putNar(second)).status, 201);
    await assertRefused(
      await put(server.url, `/${first.hashPart}.narinfo`, different, token),
      409,
      'FIRN_E_UPLOAD_CONFLICT',
      /immutable/,
    );
    const served = await (await fetch(`${server.url}/${first.hashPart}.narinfo`)).text();
    assert.match(served, new RegExp(`^URL: nar/${first.fileName}$`, 'm'));
    const nar = await fetch(`${server.url}/nar/${first.fileName}`);
    assert.ok(Buffer.from(await nar.arrayBuffer()).equals(first.file));
  });
});

describe('tokens', () => {
  test('uploads need a push token: none is 401, a read token 403, garbage 401', async () => {
    const fixture = makeFixture();
    const none = await put(server.url, `/nar/${fixture.fileName}`, fixture.file, undefined);
    await assertRefused(none, 401, 'FIRN_E_AUTH_REQUIRED');
    assert.match(none.headers.get('www-authenticate') ?? '', /^Basic /);
    await assertRefused(
      await put(server.url, `/nar/${fixture.fileName}`, fixture.file, readToken),
      403,
      'FIRN_E_AUTH_FORBIDDEN',
    );
    for (const authorization of ['Bearer nope-nope-nope', 'Basic !!!', `Bearer ${token}x`]) {
      const response = await put(
        server.url,
        `/${fixture.hashPart}.narinfo`,
        fixture.narinfo,
        undefined,
        {
          authorization,
        },
      );
      await assertRefused(response, 401, 'FIRN_E_AUTH_REQUIRED');
    }
    assert.equal(
      (await fetch(`${server.url}/nar/${fixture.fileName}`, { method: 'HEAD' })).status,
      404,
    );
    await assertNoTempFiles();
  });
});

describe('reading', () => {
  let fixture: Fixture;

  before(async () => {
    fixture = makeFixture({ size: 300_000 });
    const result = await upload(server.url, token, fixture);
    assert.equal(result.narinfo, 201, result.narinfoBody);
  });

  test('HEAD on a narinfo and a NAR has the right Content-Length and no body', async () => {
    const narinfoText = await (await fetch(`${server.url}/${fixture.hashPart}.narinfo`)).text();
    for (const [path, length] of [
      [`/${fixture.hashPart}.narinfo`, Buffer.byteLength(narinfoText)],
      [`/nar/${fixture.fileName}`, fixture.file.length],
    ] as const) {
      const head = await rawRequest(server.port, 'HEAD', path);
      assert.equal(head.status, 200, path);
      assert.equal(head.headers['content-length'], String(length), path);
      assert.equal(head.body.length, 0);
      assert.equal(head.headers['content-encoding'], undefined);
    }
    const missing = await rawRequest(server.port, 'HEAD', `/${randomHashPart()}.narinfo`);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.length, 0);
  });

  test('Range gives 206 with exactly those bytes; an unsatisfiable range is 416', async () => {
    const url = `${server.url}/nar/${fixture.fileName}`;
    const size = fixture.file.length;
    for (const [header, start, end] of [
      ['bytes=0-99', 0, 99],
      ['bytes=1000-', 1000, size - 1],
      ['bytes=-500', size - 500, size - 1],
    ] as const) {
      const response = await fetch(url, { headers: { range: header } });
      assert.equal(response.status, 206, header);
      assert.equal(response.headers.get('content-range'), `bytes ${start}-${end}/${size}`);
      assert.equal(response.headers.get('content-length'), String(end - start + 1));
      assert.ok(
        Buffer.from(await response.arrayBuffer()).equals(fixture.file.subarray(start, end + 1)),
      );
    }
    const bad = await fetch(url, { headers: { range: `bytes=${size}-` } });
    await assertRefused(bad, 416, 'FIRN_E_RANGE_INVALID');
    assert.equal(bad.headers.get('content-range'), `bytes */${size}`);
    const whole = await fetch(url);
    assert.equal(whole.headers.get('accept-ranges'), 'bytes');
    assert.ok(Buffer.from(await whole.arrayBuffer()).equals(fixture.file));
  });

  test('no response carries Content-Encoding, whatever the client accepts', async () => {
    for (const path of [
      '/nix-cache-info',
      `/${fixture.hashPart}.narinfo`,
      `/nar/${fixture.fileName}`,
      `/${randomHashPart()}.narinfo`,
      '/api/v1/stats',
      '/metrics',
      '/no/such/route',
    ]) {
      const response = await rawRequest(server.port, 'GET', path, {
        headers: { 'accept-encoding': 'gzip, deflate, br, zstd' },
      });
      assert.equal(response.headers['content-encoding'], undefined, path);
    }
  });

  test('unknown routes and methods are 404 with a FIRN_E_ code', async () => {
    for (const [method, path] of [
      ['GET', '/no/such/route'],
      ['GET', '/index.sqlite'],
      ['GET', '/blobs/nar'],
      ['GET', '/keys/cache.secret'],
      ['DELETE', `/${fixture.hashPart}.narinfo`],
      ['POST', `/nar/${fixture.fileName}`],
      ['GET', `/${fixture.hashPart}.narinfo/`],
      ['GET', `/nar/${fixture.fileName}.extra`],
      ['GET', '/log/not-a-drv'],
    ] as const) {
      const response = await rawRequest(server.port, method, path, { headers: bearer(token) });
      await assertRefused(response, 404, 'FIRN_E_NOT_FOUND');
    }
    // Nothing was deleted.
    assert.equal(await narinfoStatus(fixture), 200);
  });
});

describe('malformed requests', () => {
  test('bad framing, bad URLs and over-long names are refused with a FIRN_E_ code', async () => {
    for (const head of [
      'GARBAGE\r\n\r\n',
      'PUT /x.narinfo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n',
      `GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`,
    ]) {
      const response = await rawUpload([{ bytes: head }], 'wait');
      assert.ok([400, 431].includes(response.status), response.text);
      assert.match(response.text, /\[FIRN_E_BAD_REQUEST\]/);
    }
    for (const path of ['/nar/%', '/%zz.narinfo', `/nar/${'a'.repeat(600)}.nar`]) {
      const response = await rawRequest(server.port, 'GET', path);
      assert.ok([400, 404, 414].includes(response.status), `${path}: ${response.status}`);
      assert.match(response.body.toString(), /FIRN_E_/, path);
    }
    assert.equal((await fetch(`${server.url}/nix-cache-info`)).status, 200);
  });
});

describe('logs, realisations and debug info', () => {
  test('each kind is stored under a valid name and served back; bad names and bodies are refused', async () => {
    const drv = `${randomHashPart()}-hello-2.12.drv`;
    const realisation = JSON.stringify({ id: 'x', outPath: 'y', signatures: [] });
    const stored: [string, string][] = [
      [`/log/${drv}`, 'building hello\n'],
      [`/realisations/sha256:${'ab'.repeat(32)}!out.doi`, realisation],
      [`/build-trace-v2/${drv}/out.doi`, realisation],
      [`/debuginfo/${'0f'.repeat(20)}.debug`, '{"archive": "../nar/x.nar.xz", "member": "y"}'],
    ];
    for (const [path, body] of stored) {
      const response = await put(server.url, path, body, token);
      assert.equal(response.status, 201, `${path}: ${await response.text()}`);
      const back = await fetch(`${server.url}${path}`);
      assert.equal(back.status, 200, path);
      assert.equal(await back.text(), body);
    }
    await assertRefused(
      await put(server.url, `/realisations/sha256:${'ab'.repeat(32)}!out.doi`, '{not json', token),
      400,
      'FIRN_E_BAD_REQUEST',
    );
    for (const path of ['/log/hello.drv', '/realisations/x.doi', `/build-trace-v2/${drv}/out`]) {
      await assertRefused(await put(server.url, path, '{}', token), 404, 'FIRN_E_NOT_FOUND');
    }
    await assertRefused(
      await put(server.url, `/log/${drv}`, 'x', undefined),
      401,
      'FIRN_E_AUTH_REQUIRED',
    );
  });
});

describe('the bulk missing-paths query', () => {
  test('answers which hash parts are missing, and refuses malformed queries', async () => {
    const fixture = makeFixture();
    assert.equal((await upload(server.url, token, fixture)).narinfo, 201);
    const absent = randomHashPart();
    const query = (body: string): Promise<Response> =>
      fetch(`${server.url}/api/v1/missing`, { method: 'POST', body });
    const ok = await query(JSON.stringify({ hashes: [fixture.hashPart, absent] }));
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { missing: [absent] });
    for (const body of [
      '',
      'not json',
      '{}',
      '{"hashes": "x"}',
      '{"hashes": ["../../etc"]}',
      '[1]',
    ]) {
      await assertRefused(await query(body), 400, 'FIRN_E_BAD_REQUEST');
    }
  });
});

describe('path traversal', () => {
  const secret = (): string => readFileSync(join(server.dataDir, 'keys', 'cache.secret'), 'utf8');
  const forbidden = (): string[] => [
    'root:', // /etc/passwd
    'SQLite format', // the index
    secret().slice(secret().indexOf(':') + 1, secret().indexOf(':') + 20),
  ];
  const paths = [
    '/nar/..%2f..%2fetc%2fpasswd',
    '/nar/..%2F..%2Findex.sqlite',
    '/nar/../index.sqlite',
    '/../index.sqlite',
    '/..%2findex.sqlite',
    '/%2e%2e/index.sqlite',
    '/%2e%2e%2findex.sqlite',
    '/log/..%2F..%2Fkeys%2Fcache.secret',
    '/log/..%252F..%252Fkeys%252Fcache.secret',
    '/log/%2e%2e%2f%2e%2e%2fkeys%2fcache.secret',
    '/log/....//....//keys/cache.secret',
    '/realisations/..%2f..%2fkeys%2fcache.secret',
    '/debuginfo/..%2f..%2fkeys%2fcache.secret',
    '/build-trace-v2/..%2f..%2fkeys/cache.secret',
    '/build-trace-v2/x.drv/..%2f..%2f..%2fkeys%2fcache.secret',
    '/nar/%2e%2e%2f%2e%2e%2fkeys%2fcache.secret',
    '/nar/%252e%252e%252fkeys%252fcache.secret',
    '/..%5c..%5ckeys%5ccache.secret',
    '/keys%2fcache.secret',
    '/blobs%2fnar',
    '//etc/passwd',
    '/nar//etc/passwd',
    `/${'a'.repeat(32)}.ls/../../keys/cache.secret`,
    '/log/%00',
    '/nar/%',
  ];

  for (const method of ['GET', 'HEAD']) {
    test(`${method} never reaches outside the cache`, async () => {
      const leaked = forbidden();
      for (const path of paths) {
        const response = await rawRequest(server.port, method, path, { headers: bearer(token) });
        assert.ok([400, 404].includes(response.status), `${method} ${path}: ${response.status}`);
        const body = response.body.toString('utf8');
        for (const needle of leaked) assert.ok(!body.includes(needle), `${path} leaked ${needle}`);
        if (method === 'GET') assert.match(body, /FIRN_E_/, path);
      }
    });
  }

  test('PUT never writes outside its own directories', async () => {
    const before = secret();
    for (const path of paths) {
      const response = await rawRequest(server.port, 'PUT', path, {
        headers: bearer(token),
        body: '{"overwritten": true}',
      });
      assert.ok([400, 404].includes(response.status), `PUT ${path}: ${response.status}`);
      assert.match(response.body.toString('utf8'), /FIRN_E_/, path);
    }
    assert.equal(secret(), before);
    assert.match(
      readFileSync(join(server.dataDir, 'index.sqlite')).subarray(0, 16).toString(),
      /^SQLite format/,
    );
    assert.equal((await fetch(`${server.url}/nix-cache-info`)).status, 200);
  });
});

describe('limits', () => {
  test('a NAR larger than max-nar-size is 413 and leaves nothing', async (t) => {
    const small = await startTestServer({ env: { FIRN_MAX_NAR_SIZE: '64K' } });
    t.after(() => small[Symbol.asyncDispose]());
    const pushToken = await small.token('push');
    const fixture = makeFixture({ size: 200_000, compression: 'none' });
    const response = await put(small.url, `/nar/${fixture.fileName}`, fixture.file, pushToken);
    await assertRefused(response, 413, 'FIRN_E_INPUT_TOO_LARGE', /max-nar-size|limit/);
    assert.deepEqual(readdirSync(join(small.dataDir, 'blobs', 'tmp')), []);
    assert.equal((await stats(small.url)).nars, 0);
    const fits = makeFixture({ size: 1000 });
    assert.equal((await upload(small.url, pushToken, fits)).narinfo, 201);
  });
});

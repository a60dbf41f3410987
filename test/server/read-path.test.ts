/**
 * The read side of `firn serve` under its fast paths: narinfo GET/HEAD answered on the raw Node
 * server (src/server/narinfo-fast-path.ts) must be indistinguishable from the fastify route, and
 * NAR downloads through pooled buffers (src/server/send-file.ts) must be byte-exact, honour
 * ranges across chunk boundaries, and close the file and count the request when a client leaves.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import {
  bearer,
  fileNar,
  fixtureFromNar,
  makeFixture,
  randomHashPart,
  rawRequest,
  upload,
  type Fixture,
  type RawResponse,
} from '../cache/upload-fixtures.ts';

let server: TestServer;
let token: string;
let small: Fixture;
/** Uncompressed, so the served file is the NAR; larger than a few chunks and an odd size. */
let large: Fixture;

before(async () => {
  server = await startTestServer();
  token = await server.token('push');
  small = makeFixture({ size: 2000 });
  const hashPart = randomHashPart();
  large = fixtureFromNar(fileNar(randomBytes(24 * 1024 * 1024 + 12_345)), {
    storePath: `/nix/store/${hashPart}-large`,
    compression: 'none',
    references: [],
    deriver: `${randomHashPart()}-large.drv`,
  });
  for (const fixture of [small, large]) {
    const result = await upload(server.url, token, fixture);
    assert.equal(result.narinfo, 201, result.narinfoBody);
  }
});

after(async () => {
  await server[Symbol.asyncDispose]();
});

/** Everything a client sees except the Date header, which moves with the clock. */
function comparable(response: RawResponse): unknown {
  const { date: _date, ...headers } = response.headers;
  return { status: response.status, headers, body: response.body.toString('latin1') };
}

interface Snapshot {
  readonly text: string;
  value(pattern: RegExp): number;
}

async function metrics(): Promise<Snapshot> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return {
    text,
    value(pattern) {
      const line = text.split('\n').find((candidate) => pattern.test(candidate));
      return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
    },
  };
}

async function metric(pattern: RegExp): Promise<number> {
  return (await metrics()).value(pattern);
}

async function waitFor(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!condition() && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 20));
}

const narinfoRequests = (method: string, status: number | string): RegExp =>
  new RegExp(
    `^firn_http_requests_total\\{route="/:name",method="${method}",status="${status}"\\} `,
  );

describe('narinfo GET and HEAD', () => {
  test('the fast path answers exactly as the fastify route does, hit or miss', async () => {
    const missing = randomHashPart();
    for (const method of ['GET', 'HEAD']) {
      for (const hashPart of [small.hashPart, missing]) {
        const fast = await rawRequest(server.port, method, `/${hashPart}.narinfo`);
        // A query string is not the fast path's: fastify's route answers it.
        const routed = await rawRequest(server.port, method, `/${hashPart}.narinfo?via=fastify`);
        assert.deepEqual(comparable(fast), comparable(routed), `${method} ${hashPart}`);
      }
    }
    const hit = await rawRequest(server.port, 'GET', `/${small.hashPart}.narinfo`);
    assert.equal(hit.status, 200);
    assert.equal(hit.headers['content-type'], 'text/x-nix-narinfo');
    assert.match(hit.body.toString(), new RegExp(`^StorePath: ${small.storePath}\n`));
    assert.match(hit.body.toString(), /^Sig: test-cache-1:/m);
    const miss = await rawRequest(server.port, 'GET', `/${missing}.narinfo`);
    assert.equal(miss.status, 404);
    assert.equal(miss.headers['cache-control'], 'no-store');
    assert.equal(
      miss.body.toString(),
      `${missing}.narinfo is not in this cache [FIRN_E_NOT_FOUND]\n`,
    );
    const headMiss = await rawRequest(server.port, 'HEAD', `/${missing}.narinfo`);
    assert.equal(headMiss.body.length, 0);
    assert.equal(headMiss.headers['content-length'], String(miss.body.length));
  });

  test('counts requests, hits, misses and bytes, and writes the same access lines', async () => {
    const missing = randomHashPart();
    const before = await metrics();
    const hit = await rawRequest(server.port, 'GET', `/${small.hashPart}.narinfo`);
    await rawRequest(server.port, 'HEAD', `/${small.hashPart}.narinfo`);
    const miss = await rawRequest(server.port, 'GET', `/${missing}.narinfo`);
    const now = await metrics();
    const delta = (pattern: RegExp): number => now.value(pattern) - before.value(pattern);
    assert.equal(delta(narinfoRequests('GET', 200)), 1);
    assert.equal(delta(narinfoRequests('HEAD', 200)), 1);
    assert.equal(delta(narinfoRequests('GET', 404)), 1);
    assert.equal(delta(/^firn_narinfo_lookups_total\{result="hit"\} /), 2);
    assert.equal(delta(/^firn_narinfo_lookups_total\{result="miss"\} /), 1);
    // HEAD sends no body and counts none; the first /metrics answer itself is counted too.
    assert.equal(
      delta(/^firn_http_bytes_out_total /),
      hit.body.length + miss.body.length + Buffer.byteLength(before.text),
    );

    // The log is written asynchronously: wait for the last request's line.
    await waitFor(() => server.log().includes(`"url":"/${missing}.narinfo","status":404`));
    const lines = server
      .log()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const access = (method: string, url: string): Record<string, unknown> | undefined =>
      lines.findLast((line) => line.method === method && line.url === url);
    const hitLine = access('GET', `/${small.hashPart}.narinfo`);
    assert.equal(hitLine?.status, 200);
    assert.equal(hitLine.bytes, hit.body.length);
    assert.equal(typeof hitLine.ms, 'number');
    assert.equal(
      hitLine.msg,
      `GET /${small.hashPart}.narinfo 200 ${Number(hitLine.ms).toFixed(1)}ms`,
    );
    assert.match(String(hitLine.reqId), /^req-[0-9a-z]+$/);
    assert.equal(access('HEAD', `/${small.hashPart}.narinfo`)?.bytes, hit.body.length);
    const missLine = access('GET', `/${missing}.narinfo`);
    assert.equal(missLine?.status, 404);
    const refused = lines.find(
      (line) => line.reqId === missLine.reqId && line.msg === 'request refused',
    );
    assert.equal(refused?.code, 'FIRN_E_NOT_FOUND');
    // Ids stay unique across the fast path and fastify's.
    const ids = lines.filter((line) => line.url !== undefined).map((line) => line.reqId);
    assert.equal(new Set(ids).size, ids.length);
  });

  test('a private cache answers a read token as the route does, and refuses the rest', async (t) => {
    const privateServer = await startTestServer({ args: ['--private'] });
    t.after(() => privateServer[Symbol.asyncDispose]());
    const push = await privateServer.token('push');
    const read = await privateServer.token('read', 'reader');
    const fixture = makeFixture({ size: 500 });
    assert.equal((await upload(privateServer.url, push, fixture)).narinfo, 201);
    for (const path of [`/${fixture.hashPart}.narinfo`, `/${randomHashPart()}.narinfo`]) {
      for (const method of ['GET', 'HEAD']) {
        const fast = await rawRequest(privateServer.port, method, path, { headers: bearer(read) });
        const routed = await rawRequest(privateServer.port, method, `${path}?via=fastify`, {
          headers: bearer(read),
        });
        assert.deepEqual(comparable(fast), comparable(routed), `${method} ${path}`);
      }
      const anonymous = await rawRequest(privateServer.port, 'GET', path);
      assert.equal(anonymous.status, 401);
      assert.equal(anonymous.headers['www-authenticate'], 'Basic realm="firn"');
      assert.match(anonymous.body.toString(), /FIRN_E_AUTH_REQUIRED/);
      const forged = await rawRequest(privateServer.port, 'GET', path, {
        headers: bearer(`${read.slice(0, -4)}AAAA`),
      });
      assert.equal(forged.status, 401);
    }
    const hit = await rawRequest(privateServer.port, 'GET', `/${fixture.hashPart}.narinfo`, {
      headers: bearer(read),
    });
    assert.equal(hit.status, 200);
    assert.match(hit.body.toString(), new RegExp(`^StorePath: ${fixture.storePath}\n`));
    // The access line names the token, as the route's does (the log is written asynchronously).
    const hitLine = (): string | undefined =>
      privateServer
        .log()
        .split('\n')
        .findLast(
          (candidate) =>
            candidate.includes(`"url":"/${fixture.hashPart}.narinfo"`) &&
            candidate.includes('"method":"GET"') &&
            candidate.includes('"status":200'),
        );
    await waitFor(() => hitLine() !== undefined);
    assert.equal((JSON.parse(hitLine() ?? '{}') as { token?: string }).token, 'reader');
  });
});

describe('NAR downloads', () => {
  test('whole, in parallel, and ranges across chunk boundaries are byte-exact', async () => {
    const url = `${server.url}/nar/${large.fileName}`;
    const size = large.file.length;
    const before = await metrics();
    const wholes = await Promise.all(
      [1, 2, 3, 4].map(async () => {
        const response = await fetch(url);
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('content-length'), String(size));
        assert.equal(response.headers.get('content-type'), 'application/x-nix-nar');
        assert.equal(response.headers.get('accept-ranges'), 'bytes');
        return Buffer.from(await response.arrayBuffer());
      }),
    );
    for (const whole of wholes) assert.ok(whole.equals(large.file));
    // Each whole download is counted once sent, with its access line.
    const sent = (await metrics()).value(/^firn_http_bytes_out_total /);
    assert.equal(
      sent - before.value(/^firn_http_bytes_out_total /),
      4 * size + Buffer.byteLength(before.text),
    );
    const sentLines = (): number =>
      server
        .log()
        .split('\n')
        .filter(
          (line) =>
            line.includes(`"url":"/nar/${large.fileName}"`) && line.includes('"status":200'),
        ).length;
    await waitFor(() => sentLines() >= 4);
    const accessLines = server
      .log()
      .split('\n')
      .filter(
        (line) => line.includes(`"url":"/nar/${large.fileName}"`) && line.includes('"status":200'),
      );
    assert.ok(accessLines.length >= 4);
    assert.match(accessLines.at(-1) ?? '', new RegExp(`"bytes":${size}`));
    const MiB = 1024 * 1024;
    for (const [start, end] of [
      [MiB - 5, MiB + 5],
      // Between the small and the large chunk size: two 128 KiB chunks in turn.
      [100, 500_099],
      [0, 2 * MiB],
      [3 * MiB + 1, size - 1],
      [size - 1, size - 1],
    ] as const) {
      const response = await fetch(url, { headers: { range: `bytes=${start}-${end}` } });
      assert.equal(response.status, 206);
      assert.equal(response.headers.get('content-range'), `bytes ${start}-${end}/${size}`);
      const body = Buffer.from(await response.arrayBuffer());
      assert.ok(body.equals(large.file.subarray(start, end + 1)), `${start}-${end}`);
    }
  });

  test('a client that hangs up midway is counted as aborted and the file is closed', async () => {
    const aborted =
      /^firn_http_requests_total\{route="\/nar\/:file",method="GET",status="aborted"\} /;
    const before = await metric(aborted);
    const received = await new Promise<number>((resolve, reject) => {
      const socket = connect(server.port, '127.0.0.1');
      let bytes = 0;
      socket.on('error', reject);
      socket.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        // Stop reading: the server fills the socket buffers and waits; then leave.
        socket.pause();
        setTimeout(() => {
          socket.destroy();
          resolve(bytes);
        }, 300);
      });
      socket.write(`GET /nar/${large.fileName} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    });
    assert.ok(received < large.file.length);
    const pid = server.child.pid ?? 0;
    const openBlobs = (): string[] =>
      readdirSync(`/proc/${pid}/fd`)
        .map((fd) => {
          try {
            return readlinkSync(`/proc/${pid}/fd/${fd}`);
          } catch {
            return '';
          }
        })
        .filter((target) => target.endsWith(large.fileName));
    const deadline = Date.now() + 5000;
    while ((openBlobs().length > 0 || (await metric(aborted)) === before) && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(openBlobs(), []);
    assert.equal(await metric(aborted), before + 1);
    await waitFor(() => server.log().includes(`GET /nar/${large.fileName} aborted by the client`));
    assert.match(server.log(), new RegExp(`GET /nar/${large.fileName} aborted by the client`));
    // The server still serves, and the next download is whole.
    const again = Buffer.from(
      await (await fetch(`${server.url}/nar/${large.fileName}`)).arrayBuffer(),
    );
    assert.ok(again.equals(large.file));
  });
});

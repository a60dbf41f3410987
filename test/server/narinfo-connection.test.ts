/**
 * The raw narinfo path of `firn serve` (src/server/narinfo-connection.ts), over real sockets to
 * the real server: what it answers must be byte for byte what node:http writes once it has the
 * connection, what it declines must reach node:http whole (split heads, pipelines that turn to
 * other requests, bodies, malformed requests), and it must count, log, keep alive, close and
 * shut down as node:http does. `firn_http_raw_handovers_total` tells which path answered.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { pino } from 'pino';
import { createToken } from '../../src/cache/tokens.ts';
import { loadServeConfig } from '../../src/config/serve-config.ts';
import { startServer, type RunningServer } from '../../src/server/start.ts';
import { formatHash } from '../../src/nix/hash.ts';
import { makeNixEnv } from '../helpers/nix.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import {
  basicAuth,
  bearer,
  makeFixture,
  put,
  randomHashPart,
  rawRequest,
  upload,
  type Fixture,
} from '../cache/upload-fixtures.ts';

let server: TestServer;
let pushToken: string;
let small: Fixture;
let other: Fixture;

before(async () => {
  server = await startTestServer();
  pushToken = await server.token('push');
  small = makeFixture({ size: 2000 });
  other = makeFixture({ size: 300, name: 'other' });
  for (const fixture of [small, other]) {
    const result = await upload(server.url, pushToken, fixture);
    assert.equal(result.narinfo, 201, result.narinfoBody);
  }
});

after(async () => {
  await server[Symbol.asyncDispose]();
});

// ── a raw HTTP/1.1 client ──────────────────────────────────────────────────────────────────

interface Answer {
  /** The exact bytes of this response. */
  readonly raw: Buffer;
  readonly status: number;
  /** Header names lower-cased; a repeated name keeps its last value. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

/**
 * Splits `data` into responses to requests with `methods` (HEAD answers carry no body; 1xx
 * answers precede their final one). A response without a length runs to the end of the
 * connection, so it counts only once `closed`.
 */
function splitAnswers(data: Buffer, methods: readonly string[], closed: boolean): Answer[] {
  const answers: Answer[] = [];
  let offset = 0;
  let request = 0;
  while (offset < data.length && request < methods.length) {
    const headEnd = data.indexOf('\r\n\r\n', offset);
    if (headEnd < 0) break;
    const lines = data.subarray(offset, headEnd).toString('latin1').split('\r\n');
    const status = Number(lines[0]?.split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    const bodyStart = headEnd + 4;
    let end: number;
    if (status < 200 || methods[request] === 'HEAD') end = bodyStart;
    else if (headers['content-length'] !== undefined)
      end = bodyStart + Number(headers['content-length']);
    else if (closed) end = data.length;
    else break;
    if (end > data.length) break;
    answers.push({
      raw: data.subarray(offset, end),
      status,
      headers,
      body: data.subarray(bodyStart, end),
    });
    if (status >= 200) request++;
    offset = end;
  }
  return answers;
}

class RawClient {
  readonly socket: Socket;
  #data = Buffer.alloc(0);
  #closed = false;
  #wake: (() => void) | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.#data = Buffer.concat([this.#data, chunk]);
      this.#wake?.();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#wake?.();
    });
    // A reset by the server shows as a close; the tests look at what arrived before it.
    socket.on('error', () => undefined);
  }

  static open(port = server.port): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.removeListener('error', reject);
        resolve(new RawClient(socket));
      });
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  get data(): Buffer {
    return this.#data;
  }

  write(text: string): void {
    this.socket.write(text, 'latin1');
  }

  /** Waits until `condition` holds (checked whenever data or the close arrives). */
  async until(condition: () => boolean, what: string, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!condition()) {
      if (this.#closed && !condition()) throw new Error(`connection closed before ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100));
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** The answers to `methods`, once all of them have arrived. */
  async answers(methods: readonly string[]): Promise<Answer[]> {
    let answers: Answer[] = [];
    const complete = (): boolean => {
      answers = splitAnswers(this.#data, methods, this.#closed);
      return answers.filter((answer) => answer.status >= 200).length === methods.length;
    };
    await this.until(complete, `${methods.length} answers`);
    return answers;
  }

  waitClosed(ms = 2000): Promise<void> {
    return this.until(() => this.#closed, 'the server to close the connection', ms);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Sends `text` on a new connection and returns the answers to `methods`. */
async function exchange(
  text: string,
  methods: readonly string[],
  port = server.port,
): Promise<Answer[]> {
  const client = await RawClient.open(port);
  try {
    client.write(text);
    return await client.answers(methods);
  } finally {
    client.close();
  }
}

function request(method: string, path: string, headers = 'Host: 127.0.0.1\r\n'): string {
  return `${method} ${path} HTTP/1.1\r\n${headers}\r\n`;
}

/** A request that is not the raw path's: on a new connection it hands the connection over. */
const HAND_OVER = request('GET', '/nix-cache-info');

/** The bytes of an answer with its Date value (the only field allowed to differ) blanked. */
function normalised(answer: Answer | undefined): string {
  assert.ok(answer !== undefined, 'no answer');
  return answer.raw.toString('latin1').replace(/\r\nDate: [^\r]*\r\n/, '\r\nDate: -\r\n');
}

// ── metrics and log ──────────────────────────────────────────────────────────────────────────

interface Snapshot {
  value(pattern: RegExp): number;
}

/** /metrics on a connection of its own (which node:http answers: one 'request' hand-over). */
async function metrics(target: TestServer = server): Promise<Snapshot> {
  const text = (await rawRequest(target.port, 'GET', '/metrics')).body.toString();
  return {
    value(pattern) {
      const line = text.split('\n').find((candidate) => pattern.test(candidate));
      return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
    },
  };
}

const handovers = (reason: string): RegExp =>
  new RegExp(`^firn_http_raw_handovers_total\\{reason="${reason}"\\} `);
const narinfoRequests = (method: string, status: number | string): RegExp =>
  new RegExp(
    `^firn_http_requests_total\\{route="/:name",method="${method}",status="${status}"\\} `,
  );

/** Hand-overs by reason between two snapshots, not counting the later snapshot's own. */
const REASONS = ['request', 'incomplete', 'unauthorized', 'lookup', 'closing'] as const;
type Handovers = Record<(typeof REASONS)[number], number>;
const NONE: Handovers = { request: 0, incomplete: 0, unauthorized: 0, lookup: 0, closing: 0 };

function handedOver(before: Snapshot, now: Snapshot): Handovers {
  const delta = { ...NONE };
  for (const reason of REASONS) {
    const count = now.value(handovers(reason)) - before.value(handovers(reason));
    delta[reason] = reason === 'request' ? count - 1 : count;
  }
  return delta;
}

async function waitFor(condition: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 20));
}

function logLines(target: TestServer = server): Record<string, unknown>[] {
  return target
    .log()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

// ── the tests ────────────────────────────────────────────────────────────────────────────────

describe('answers on the socket', () => {
  test('200 and 404, GET and HEAD: the bytes node:http writes after a hand-over', async () => {
    const missing = randomHashPart();
    const before = await metrics();
    for (const method of ['GET', 'HEAD']) {
      for (const hashPart of [small.hashPart, missing]) {
        const narinfo = request(method, `/${hashPart}.narinfo`);
        const [raw] = await exchange(narinfo, [method]);
        const [, handed] = await exchange(HAND_OVER + narinfo, ['GET', method]);
        assert.equal(normalised(raw), normalised(handed), `${method} ${hashPart}`);
        assert.equal(raw?.headers.connection, 'keep-alive');
        assert.equal(raw.headers['keep-alive'], 'timeout=65');
        assert.match(raw.headers.date ?? '', /^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/);
      }
    }
    // Four connections handed over by /nix-cache-info; the raw ones never were.
    assert.deepEqual(handedOver(before, await metrics()), { ...NONE, request: 4 });

    const [hit, headHit, miss, headMiss] = await exchange(
      request('GET', `/${small.hashPart}.narinfo`) +
        request('HEAD', `/${small.hashPart}.narinfo`) +
        request('GET', `/${missing}.narinfo`) +
        request('HEAD', `/${missing}.narinfo`),
      ['GET', 'HEAD', 'GET', 'HEAD'],
    );
    assert.equal(hit?.status, 200);
    assert.equal(hit.headers['content-type'], 'text/x-nix-narinfo');
    assert.match(hit.body.toString(), new RegExp(`^StorePath: ${small.storePath}\n`));
    assert.match(hit.body.toString(), /^Sig: test-cache-1:/m);
    assert.equal(headHit?.status, 200);
    assert.equal(headHit.body.length, 0);
    assert.equal(headHit.headers['content-length'], String(hit.body.length));
    assert.equal(miss?.status, 404);
    assert.equal(miss.headers['cache-control'], 'no-store');
    assert.equal(
      miss.body.toString(),
      `${missing}.narinfo is not in this cache [FIRN_E_NOT_FOUND]\n`,
    );
    assert.equal(headMiss?.status, 404);
    assert.equal(headMiss.raw.toString('latin1').endsWith('\r\n\r\n'), true);
  });

  test('keeps the connection alive, and honours Connection: close', async () => {
    const before = await metrics();
    const client = await RawClient.open();
    try {
      const narinfo = request('GET', `/${small.hashPart}.narinfo`);
      let methods: string[] = [];
      for (let i = 0; i < 3; i++) {
        methods = [...methods, 'GET'];
        client.write(narinfo);
        const answers = await client.answers(methods);
        assert.equal(answers.at(-1)?.status, 200);
        assert.equal(answers.at(-1)?.headers.connection, 'keep-alive');
      }
      assert.equal(client.closed, false);
      methods = [...methods, 'GET'];
      client.write(
        request('GET', `/${other.hashPart}.narinfo`, 'Host: x\r\nConnection: close\r\n'),
      );
      const last = (await client.answers(methods)).at(-1);
      assert.equal(last?.status, 200);
      assert.equal(last.headers.connection, 'close');
      assert.equal(last.headers['keep-alive'], undefined);
      assert.match(last.body.toString(), new RegExp(`^StorePath: ${other.storePath}\n`));
      await client.waitClosed();
      // node:http writes the same for Connection: close.
      const [, handed] = await exchange(
        HAND_OVER +
          request('GET', `/${other.hashPart}.narinfo`, 'Host: x\r\nConnection: close\r\n'),
        ['GET', 'GET'],
      );
      assert.equal(normalised(last), normalised(handed));
    } finally {
      client.close();
    }
    assert.deepEqual(handedOver(before, await metrics()), { ...NONE, request: 1 });
  });

  test('Date follows the clock from one second to the next', async () => {
    const client = await RawClient.open();
    try {
      const narinfo = request('HEAD', `/${small.hashPart}.narinfo`);
      const dates: string[] = [];
      for (const methods of [['HEAD'], ['HEAD', 'HEAD']]) {
        client.write(narinfo);
        const date = (await client.answers(methods)).at(-1)?.headers.date ?? '';
        assert.ok(Math.abs(Date.parse(date) - Date.now()) < 1500, `${date} is not now`);
        dates.push(date);
        // Into the next second.
        await new Promise((resolve) => setTimeout(resolve, 1001 - (Date.now() % 1000)));
      }
      assert.notEqual(dates[0], dates[1]);
    } finally {
      client.close();
    }
  });

  test('pipelined narinfo requests in one write are answered in order', async () => {
    const missing = randomHashPart();
    const before = await metrics();
    const order = [
      ['GET', small],
      ['GET', undefined],
      ['HEAD', other],
      ['GET', other],
      ['HEAD', undefined],
      ['GET', small],
    ] as const;
    const answers = await exchange(
      order
        .map(([method, fixture]) => request(method, `/${fixture?.hashPart ?? missing}.narinfo`))
        .join(''),
      order.map(([method]) => method),
    );
    assert.equal(answers.length, order.length);
    for (const [i, [method, fixture]] of order.entries()) {
      const answer = answers[i];
      assert.equal(answer?.status, fixture === undefined ? 404 : 200, `answer ${i}`);
      if (method === 'HEAD') assert.equal(answer.body.length, 0);
      else if (fixture !== undefined)
        assert.match(answer.body.toString(), new RegExp(`^StorePath: ${fixture.storePath}\n`));
    }
    assert.deepEqual(handedOver(before, await metrics()), NONE);
  });

  test('a pipeline that turns to a NAR and an upload with a body is handed over whole', async () => {
    const fresh = makeFixture({ size: 700, name: 'fresh' });
    const nar = await put(server.url, `/nar/${fresh.fileName}`, fresh.file, pushToken);
    assert.equal(nar.status, 201);
    const before = await metrics();
    const body = Buffer.from(fresh.narinfo);
    const answers = await exchange(
      request('GET', `/${small.hashPart}.narinfo`) +
        request('GET', `/nar/${small.fileName}`) +
        `PUT /${fresh.hashPart}.narinfo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${pushToken}\r\n` +
        `Content-Type: text/x-nix-narinfo\r\nContent-Length: ${body.length}\r\n\r\n${fresh.narinfo}` +
        request('GET', `/${other.hashPart}.narinfo`),
      ['GET', 'GET', 'PUT', 'GET'],
    );
    assert.deepEqual(
      answers.map((answer) => answer.status),
      [200, 200, 201, 200],
    );
    assert.match(answers[0]?.body.toString() ?? '', new RegExp(`^StorePath: ${small.storePath}\n`));
    assert.ok(answers[1]?.body.equals(small.file), 'the NAR, whole');
    assert.match(answers[3]?.body.toString() ?? '', new RegExp(`^StorePath: ${other.storePath}\n`));
    const [served] = await exchange(request('GET', `/${fresh.hashPart}.narinfo`), ['GET']);
    assert.equal(served?.status, 200);
    assert.match(served.body.toString(), new RegExp(`^StorePath: ${fresh.storePath}\n`));
    assert.deepEqual(handedOver(before, await metrics()), { ...NONE, request: 1 });
  });

  test('a head split across writes byte by byte is handed over and answered the same', async () => {
    const narinfo = request(
      'GET',
      `/${small.hashPart}.narinfo`,
      'Host: 127.0.0.1\r\nAccept: */*\r\n',
    );
    const [whole] = await exchange(narinfo, ['GET']);
    const before = await metrics();
    const client = await RawClient.open();
    try {
      for (const byte of narinfo) {
        client.write(byte);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      const [split] = await client.answers(['GET']);
      assert.equal(normalised(split), normalised(whole));
    } finally {
      client.close();
    }
    assert.deepEqual(handedOver(before, await metrics()), { ...NONE, incomplete: 1 });
  });

  test('heads too large for it go to node:http: answered below its limit, 431 above', async () => {
    const before = await metrics();
    const narinfo = (filler: number): string =>
      request(
        'GET',
        `/${small.hashPart}.narinfo`,
        `Host: x\r\nX-Filler: ${'f'.repeat(filler)}\r\n`,
      );
    const [large] = await exchange(narinfo(6000), ['GET']);
    const [plain] = await exchange(narinfo(10), ['GET']);
    assert.equal(large?.status, 200);
    assert.equal(normalised(large), normalised(plain));
    const client = await RawClient.open();
    try {
      client.write(narinfo(20_000));
      await client.waitClosed();
      const [tooLarge] = splitAnswers(client.data, ['GET'], true);
      assert.equal(tooLarge?.status, 431);
      assert.equal(
        tooLarge.body.toString(),
        'malformed HTTP request (HPE_HEADER_OVERFLOW) [FIRN_E_BAD_REQUEST]\n',
      );
    } finally {
      client.close();
    }
    // 6000 bytes: complete but over the raw limit; 20,000: the same, or not complete in a read.
    const delta = handedOver(before, await metrics());
    assert.equal(delta.request + delta.incomplete, 2, JSON.stringify(delta));
  });
});

describe('hands over what is not its own, answered as node:http and fastify answer it', () => {
  const hash = (): string => small.hashPart;
  const cases: readonly {
    readonly name: string;
    readonly text: () => string;
    readonly status: number;
    readonly reason: 'request' | 'incomplete';
  }[] = [
    {
      name: 'obs-fold',
      text: () => `GET /${hash()}.narinfo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n`,
      status: 400,
      reason: 'request',
    },
    {
      name: 'bare LF line endings',
      text: () => `GET /${hash()}.narinfo HTTP/1.1\nHost: x\n\n`,
      status: 400,
      reason: 'incomplete',
    },
    {
      name: 'a bare LF in a field',
      text: () => `GET /${hash()}.narinfo HTTP/1.1\r\nHost: x\nX: y\r\n\r\n`,
      status: 400,
      reason: 'request',
    },
    {
      name: 'NUL in a value',
      text: () => `GET /${hash()}.narinfo HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n`,
      status: 400,
      reason: 'request',
    },
    {
      name: 'HTTP/1.0',
      text: () => `GET /${hash()}.narinfo HTTP/1.0\r\nHost: x\r\n\r\n`,
      status: 200,
      reason: 'request',
    },
    {
      name: 'a lower-case method',
      text: () => `get /${hash()}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`,
      status: 400,
      reason: 'request',
    },
    {
      name: 'an absolute-form target',
      text: () => `GET http://127.0.0.1/${hash()}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`,
      status: 200,
      reason: 'request',
    },
    {
      name: 'a query string',
      text: () => `GET /${hash()}.narinfo?via=fastify HTTP/1.1\r\nHost: x\r\n\r\n`,
      status: 200,
      reason: 'request',
    },
    {
      name: 'a percent-encoded name',
      text: () =>
        `GET /%${hash().charCodeAt(0).toString(16)}${hash().slice(1)}.narinfo HTTP/1.1\r\nHost: x\r\n\r\n`,
      status: 200,
      reason: 'request',
    },
    {
      name: 'Content-Length with GET',
      text: () => `GET /${hash()}.narinfo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc`,
      status: 200,
      reason: 'request',
    },
    {
      name: 'a chunked GET',
      text: () =>
        `GET /${hash()}.narinfo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
      status: 200,
      reason: 'request',
    },
    {
      name: 'no Host',
      text: () => `GET /${hash()}.narinfo HTTP/1.1\r\n\r\n`,
      status: 400,
      reason: 'request',
    },
    {
      name: 'a space before the colon',
      text: () => `GET /${hash()}.narinfo HTTP/1.1\r\nHost : x\r\n\r\n`,
      status: 400,
      reason: 'request',
    },
  ];
  for (const { name, text, status, reason } of cases) {
    test(name, async () => {
      const before = await metrics();
      const first = await RawClient.open();
      const second = await RawClient.open();
      try {
        first.write(text());
        const [answer] = await first.answers(['GET']);
        // node:http has this connection from its first request on. (In one write with that
        // request, a malformed one would be refused before the first was answered.)
        second.write(HAND_OVER);
        await second.answers(['GET']);
        second.write(text());
        const [, handed] = await second.answers(['GET', 'GET']);
        assert.equal(answer?.status, status);
        assert.equal(normalised(answer), normalised(handed));
        if (status === 200)
          assert.match(answer.body.toString(), new RegExp(`^StorePath: ${small.storePath}\n`));
      } finally {
        first.close();
        second.close();
      }
      const delta = handedOver(before, await metrics());
      assert.deepEqual(delta, { ...NONE, request: 1, [reason]: reason === 'request' ? 2 : 1 });
    });
  }
});

describe('a private cache', () => {
  test('a valid read token is answered on the socket; others go to fastify for 401', async (t) => {
    const cache = await startTestServer({ args: ['--private'] });
    t.after(() => cache[Symbol.asyncDispose]());
    const push = await cache.token('push');
    const read = await cache.token('read', 'reader');
    const fixture = makeFixture({ size: 500 });
    assert.equal((await upload(cache.url, push, fixture)).narinfo, 201);
    const path = `/${fixture.hashPart}.narinfo`;
    const headers = (auth: Record<string, string>): string =>
      `Host: x\r\nAuthorization: ${auth.authorization ?? ''}\r\n`;

    let before = await metrics(cache);
    for (const auth of [bearer(read), basicAuth(read), bearer(push)]) {
      for (const method of ['GET', 'HEAD']) {
        const narinfo = request(method, path, headers(auth));
        const [raw] = await exchange(narinfo, [method], cache.port);
        const [, handed] = await exchange(
          request('GET', '/healthz') + narinfo,
          ['GET', method],
          cache.port,
        );
        assert.equal(raw?.status, 200);
        assert.equal(normalised(raw), normalised(handed));
      }
    }
    assert.deepEqual(handedOver(before, await metrics(cache)), { ...NONE, request: 6 });

    before = await metrics(cache);
    const forged = bearer(`${read.slice(0, -4)}AAAA`);
    for (const auth of [forged, basicAuth(`${push}x`)]) {
      const [refused] = await exchange(request('GET', path, headers(auth)), ['GET'], cache.port);
      assert.equal(refused?.status, 401);
      assert.match(refused.body.toString(), /FIRN_E_AUTH_REQUIRED/);
    }
    const [anonymous] = await exchange(request('GET', path), ['GET'], cache.port);
    assert.equal(anonymous?.status, 401);
    assert.equal(anonymous.headers['www-authenticate'], 'Basic realm="firn"');
    assert.deepEqual(handedOver(before, await metrics(cache)), { ...NONE, unauthorized: 3 });

    // The access line names the token, as the route's does (the log is written asynchronously).
    const accessLines = (): Record<string, unknown>[] =>
      logLines(cache).filter(
        (line) => line.url === path && line.method === 'GET' && line.status === 200,
      );
    // Six GETs answered above (three tokens, raw and handed over); the push token's last.
    await waitFor(() => accessLines().length === 6);
    assert.equal(accessLines().at(-1)?.token, accessLines().at(-2)?.token);
    assert.notEqual(accessLines().at(-1)?.token, 'reader');
    const [hit] = await exchange(request('GET', path, headers(bearer(read))), ['GET'], cache.port);
    assert.equal(hit?.status, 200);
    await waitFor(() => accessLines().length === 7);
    assert.equal(accessLines().at(-1)?.token, 'reader');
  });
});

describe('metrics, log and connections', () => {
  test('raw answers count and log exactly as the fast path does', async () => {
    const missing = randomHashPart();
    const before = await metrics();
    const [hit, , miss] = await exchange(
      request('GET', `/${small.hashPart}.narinfo`) +
        request('HEAD', `/${small.hashPart}.narinfo`) +
        request('GET', `/${missing}.narinfo`),
      ['GET', 'HEAD', 'GET'],
    );
    const now = await metrics();
    assert.deepEqual(handedOver(before, now), NONE);
    const delta = (pattern: RegExp): number => now.value(pattern) - before.value(pattern);
    assert.equal(delta(narinfoRequests('GET', 200)), 1);
    assert.equal(delta(narinfoRequests('HEAD', 200)), 1);
    assert.equal(delta(narinfoRequests('GET', 404)), 1);
    assert.equal(delta(/^firn_narinfo_lookups_total\{result="hit"\} /), 2);
    assert.equal(delta(/^firn_narinfo_lookups_total\{result="miss"\} /), 1);
    // HEAD counts no bytes; the first /metrics answer (counted once sent) is in the delta too.
    const firstMetrics = await rawRequest(server.port, 'GET', '/metrics');
    assert.ok(firstMetrics.status === 200);
    const bytes =
      delta(/^firn_http_bytes_out_total /) - (hit?.body.length ?? 0) - (miss?.body.length ?? 0);
    assert.ok(bytes > 1000 && bytes < 100_000, `the /metrics answer only, got ${bytes}`);

    await waitFor(() => server.log().includes(`"url":"/${missing}.narinfo","status":404`));
    const lines = logLines();
    const access = (method: string, url: string): Record<string, unknown> | undefined =>
      lines.findLast((line) => line.method === method && line.url === url);
    const hitLine = access('GET', `/${small.hashPart}.narinfo`);
    assert.equal(hitLine?.status, 200);
    assert.equal(hitLine.bytes, hit?.body.length);
    assert.equal(typeof hitLine.ms, 'number');
    assert.equal(
      hitLine.msg,
      `GET /${small.hashPart}.narinfo 200 ${Number(hitLine.ms).toFixed(1)}ms`,
    );
    assert.match(String(hitLine.reqId), /^req-[0-9a-z]+$/);
    assert.equal(hitLine.token, undefined);
    assert.deepEqual(
      Object.keys(hitLine).filter((key) => !['level', 'time', 'pid', 'hostname'].includes(key)),
      ['reqId', 'method', 'url', 'status', 'ms', 'bytes', 'msg'],
    );
    assert.equal(access('HEAD', `/${small.hashPart}.narinfo`)?.bytes, hit?.body.length);
    const missLine = access('GET', `/${missing}.narinfo`);
    assert.equal(missLine?.status, 404);
    const refused = lines.find(
      (line) => line.reqId === missLine.reqId && line.msg === 'request refused',
    );
    assert.equal(refused?.code, 'FIRN_E_NOT_FOUND');
    assert.equal(refused.reason, `${missing}.narinfo is not in this cache`);
    // Ids stay unique across the raw path, the fast path and fastify.
    const ids = lines.filter((line) => line.url !== undefined).map((line) => line.reqId);
    assert.equal(new Set(ids).size, ids.length);
  });

  test('stops reading while the client does not; a client that vanishes costs nothing', async (t) => {
    // A narinfo of about 50 KiB (1500 references), so that a pipeline that fits in one read
    // asks for ~50 MB of answers: far more than socket buffers hold.
    const cache = await startTestServer({ args: ['--allow-missing-references'] });
    t.after(() => cache[Symbol.asyncDispose]());
    const token = await cache.token('push');
    const references = Array.from({ length: 1500 }, () => `${randomHashPart()}-reference`);
    const big = makeFixture({ size: 100, references });
    assert.equal((await upload(cache.url, token, big)).narinfo, 201);
    const pid = cache.child.pid ?? 0;
    const sockets = (): number =>
      readdirSync(`/proc/${pid}/fd`).filter((fd) => {
        try {
          return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
        } catch {
          return false;
        }
      }).length;
    const baseline = sockets();
    const before = await metrics(cache);
    const narinfo = request('GET', `/${big.hashPart}.narinfo`, 'Host: x\r\n');
    // One write below the loopback MSS: one read, so no head is split and none handed over.
    const count = Math.floor(60_000 / narinfo.length);
    const client = await RawClient.open(cache.port);
    client.socket.pause();
    client.write(narinfo.repeat(count));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const answered = async (): Promise<number> =>
      (await metrics(cache)).value(narinfoRequests('GET', 200)) -
      before.value(narinfoRequests('GET', 200));
    const whileStalled = await answered();
    // It answered until the socket stopped taking answers, then waited: far fewer than asked.
    assert.ok(whileStalled > 0 && whileStalled < count / 2, `answered ${whileStalled} of ${count}`);
    client.close();
    await waitFor(() => sockets() <= baseline);
    assert.ok(sockets() <= baseline, `server sockets ${sockets()} > ${baseline}`);
    assert.equal(await answered(), whileStalled);
    // Only the two /metrics reads in between were handed over.
    assert.deepEqual(handedOver(before, await metrics(cache)), { ...NONE, request: 2 });
    const [again] = await exchange(request('GET', `/${big.hashPart}.narinfo`), ['GET'], cache.port);
    assert.equal(again?.status, 200);
    assert.equal(
      again.body.toString(),
      (await rawRequest(cache.port, 'GET', `/${big.hashPart}.narinfo?x`)).body.toString(),
    );
  });

  test('closing the server ends idle raw connections at once', async (t) => {
    const cache = await startTestServer();
    t.after(() => cache[Symbol.asyncDispose]());
    const token = await cache.token('push');
    const fixture = makeFixture({ size: 100 });
    assert.equal((await upload(cache.url, token, fixture)).narinfo, 201);
    const clients = await Promise.all([1, 2, 3, 4, 5].map(() => RawClient.open(cache.port)));
    const [answered1, answered2, answered3, handed, silent] = clients;
    assert.ok(answered1 && answered2 && answered3 && handed && silent);
    for (const client of [answered1, answered2, answered3]) {
      client.write(request('GET', `/${fixture.hashPart}.narinfo`));
      assert.equal((await client.answers(['GET']))[0]?.status, 200);
    }
    handed.write(HAND_OVER);
    assert.equal((await handed.answers(['GET']))[0]?.status, 200);
    // `silent` sent nothing at all.
    const started = performance.now();
    await cache.stop();
    const stopped = performance.now() - started;
    assert.ok(stopped < 1000, `the server took ${stopped.toFixed(0)} ms to stop`);
    for (const client of clients) await client.waitClosed(500);
    assert.equal(cache.child.exitCode, 0);
  });
});

describe('in process: keep-alive timeout, failed lookups, shutdown', () => {
  /** The real server (startServer, as `firn serve` runs it) inside this process. */
  async function inProcess(t: TestContext): Promise<{ running: RunningServer; fixture: Fixture }> {
    const dataDir = mkdtempSync(join(tmpdir(), 'firn-raw-'));
    t.after(() => {
      rmSync(dataDir, { recursive: true, force: true });
    });
    const config = await loadServeConfig({
      env: {},
      flags: { listen: '127.0.0.1:0', data: dataDir, 'key-name': 'test-cache-1' },
    });
    const running = await startServer(config, pino({ level: 'silent' }));
    t.after(() => running.close());
    const { token } = await createToken(running.cache.index, 'pusher', 'push');
    const fixture = makeFixture({ size: 100 });
    assert.equal((await upload(running.url, token, fixture)).narinfo, 201);
    return { running, fixture };
  }

  const portOf = (running: RunningServer): number => Number(new URL(running.url).port);

  test('an idle kept-alive connection closes after keepAliveTimeout and its buffer', async (t) => {
    const { running, fixture } = await inProcess(t);
    const server = running.app.server;
    server.keepAliveTimeout = 400;
    server.keepAliveTimeoutBuffer = 100;
    const narinfo = request('GET', `/${fixture.hashPart}.narinfo`);
    const client = await RawClient.open(portOf(running));
    try {
      client.write(narinfo);
      const [answer] = await client.answers(['GET']);
      const answered = performance.now();
      // node:http advertises whole seconds, rounded down, whenever there is a timeout.
      assert.equal(answer?.headers['keep-alive'], 'timeout=0');
      const [, handed] = await exchange(HAND_OVER + narinfo, ['GET', 'GET'], portOf(running));
      assert.equal(normalised(answer), normalised(handed));
      await client.waitClosed(3000);
      const idle = performance.now() - answered;
      assert.ok(idle >= 450 && idle < 2000, `closed after ${idle.toFixed(0)} ms`);
    } finally {
      client.close();
    }
  });

  test('a failed lookup goes to node:http, and fastify reports the failure', async (t) => {
    const { running, fixture } = await inProcess(t);
    running.cache.index.getNarInfo = () => Promise.reject(new Error('the index is on fire'));
    const narinfo = request('GET', `/${fixture.hashPart}.narinfo`);
    const [failed] = await exchange(narinfo + HAND_OVER, ['GET', 'GET'], portOf(running));
    assert.equal(failed?.status, 500);
    assert.equal(failed.body.toString(), 'internal error [FIRN_E_INTERNAL]\n');
    const [, handed] = await exchange(HAND_OVER + narinfo, ['GET', 'GET'], portOf(running));
    assert.equal(normalised(failed), normalised(handed));
  });

  test('a request that arrives while the server closes gets the 503 of fastify', async (t) => {
    const { running, fixture } = await inProcess(t);
    const index = running.cache.index;
    const lookup = index.getNarInfo.bind(index);
    // Slow enough to start closing while the first request is being answered.
    index.getNarInfo = async (hashPart) => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      return lookup(hashPart);
    };
    const narinfo = request('GET', `/${fixture.hashPart}.narinfo`);
    const client = await RawClient.open(portOf(running));
    try {
      client.write(narinfo + narinfo);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const closed = running.close();
      const [first, second] = await client.answers(['GET', 'GET']);
      assert.equal(first?.status, 200);
      assert.match(first.body.toString(), new RegExp(`^StorePath: ${fixture.storePath}\n`));
      assert.equal(second?.status, 503);
      assert.equal(second.headers.connection, 'close');
      await client.waitClosed();
      await closed;
    } finally {
      client.close();
    }
  });
});

describe('the real Nix client', () => {
  test('nix path-info reads narinfos answered on the socket', async (t) => {
    const nix = makeNixEnv();
    t.after(() => {
      nix[Symbol.dispose]();
    });
    const store = server.url;
    const info = async (path: string): Promise<{ narHash: string; narSize: number }> => {
      const result = await nix.nix('nix', ['path-info', '--json', '--store', store, path]);
      const [entry] = JSON.parse(result.stdout.toString()) as {
        path: string;
        narHash: string;
        narSize: number;
      }[];
      assert.equal(entry?.path, path);
      return entry;
    };
    // The first run also reads /nix-cache-info (and so hands its connection over); Nix then
    // remembers the cache, so the second run's first request on its connection is the narinfo.
    const first = await info(small.storePath);
    assert.equal(first.narSize, small.nar.length);
    assert.equal(first.narHash, formatHash(small.info.narHash, 'sri'));
    const before = await metrics();
    const second = await info(other.storePath);
    assert.equal(second.narSize, other.nar.length);
    assert.equal(second.narHash, formatHash(other.info.narHash, 'sri'));
    const missing = await nix.nixRaw('nix', [
      'path-info',
      '--store',
      store,
      `/nix/store/${randomHashPart()}-missing`,
    ]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /is not valid/);
    const now = await metrics();
    assert.deepEqual(handedOver(before, now), NONE);
    // Nix asks for a missing path's narinfo more than once (no negative cache in these tests).
    assert.ok(
      now.value(narinfoRequests('GET', 404)) - before.value(narinfoRequests('GET', 404)) >= 1,
    );
  });
});

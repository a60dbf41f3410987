/**
 * The push client's HTTP behaviour against a scripted loopback server: which failures are
 * retried (network errors, 5xx, 408, 429) and which are final (other 4xx, quoting the cache),
 * bodies sent again in full on a retry, credentials on every request, and the fallback from
 * firn's bulk missing query to one narinfo HEAD per path for other caches.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { test, type TestContext } from 'node:test';
import { FirnError } from '../../src/errors.ts';
import { CacheClient, parseCacheUrl, type RetryEvent } from '../../src/push/cache-client.ts';
import { askMissing } from '../../src/push/missing.ts';
import { freePort } from '../helpers/server.ts';

type Handler = (request: IncomingMessage, body: Buffer, response: ServerResponse) => void;

async function serve(t: TestContext, handler: Handler): Promise<string> {
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      handler(request, Buffer.concat(chunks), response);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const address = server.address();
  return `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
}

function client(url: string, retries: RetryEvent[], authorization?: string): CacheClient {
  return new CacheClient({
    url,
    authorization,
    backoff: { retries: 3, baseMs: 5, maxMs: 20 },
    onRetry: (event) => retries.push(event),
  });
}

test('5xx, 408 and 429 are retried, and a stream body is sent whole each time', async (t) => {
  const statuses = [503, 408, 429, 201];
  const bodies: string[] = [];
  const url = await serve(t, (_request, body, response) => {
    bodies.push(body.toString());
    response.writeHead(statuses.shift() ?? 500).end('busy [FIRN_E_STORE_BUSY]\n');
  });
  const retries: RetryEvent[] = [];
  const cache = client(url, retries);
  t.after(() => {
    cache.close();
  });
  const response = await cache.expect(
    {
      method: 'PUT',
      path: 'nar/x.nar',
      headers: { 'content-length': 10 },
      body: () => Readable.from([Buffer.from('0123'), Buffer.from('456789')]),
    },
    [201],
  );
  assert.equal(response.status, 201);
  assert.deepEqual(bodies, Array<string>(4).fill('0123456789'));
  assert.deepEqual(
    retries.map((event) => [event.attempt, event.request, event.reason.slice(0, 8)]),
    [
      [1, 'PUT /nar/x.nar', 'HTTP 503'],
      [2, 'PUT /nar/x.nar', 'HTTP 408'],
      [3, 'PUT /nar/x.nar', 'HTTP 429'],
    ],
  );
});

test('a 4xx is final and quotes the cache; 401 and 403 say how to give a token', async (t) => {
  const url = await serve(t, (request, _body, response) => {
    if (request.url === '/a.narinfo')
      response
        .writeHead(400)
        .end(
          'refusing /nix/store/a: the cache lacks 1 of its references [FIRN_E_UPLOAD_REFERENCE_MISSING]\nhint: upload the whole closure\n',
        );
    else if (request.url === '/b.narinfo')
      response.writeHead(401).end('needs a token [FIRN_E_AUTH_REQUIRED]\n');
    else response.writeHead(403).end('read scope [FIRN_E_AUTH_FORBIDDEN]\n');
  });
  const retries: RetryEvent[] = [];
  const cache = client(url, retries);
  t.after(() => {
    cache.close();
  });
  await assert.rejects(
    cache.expect({ method: 'PUT', path: 'a.narinfo', body: () => Buffer.from('x') }, [200, 201]),
    (error: unknown) =>
      FirnError.is(error) &&
      error.code === 'FIRN_E_PUSH_FAILED' &&
      error.message.includes(
        'refused PUT /a.narinfo with HTTP 400: refusing /nix/store/a: the cache lacks 1 of its references (FIRN_E_UPLOAD_REFERENCE_MISSING)',
      ) &&
      error.hint === 'upload the whole closure',
  );
  await assert.rejects(
    cache.expect({ method: 'PUT', path: 'b.narinfo' }, [201]),
    (error: unknown) =>
      FirnError.is(error) &&
      error.code === 'FIRN_E_AUTH_REQUIRED' &&
      (error.hint ?? '').includes('netrc'),
  );
  await assert.rejects(
    cache.expect({ method: 'PUT', path: 'c.narinfo' }, [201]),
    (error: unknown) => FirnError.is(error) && error.code === 'FIRN_E_AUTH_FORBIDDEN',
  );
  assert.deepEqual(retries, []);
});

test('a cache that does not answer: retries, then FIRN_E_CACHE_UNREACHABLE', async (t) => {
  const port = await freePort();
  const retries: RetryEvent[] = [];
  const cache = client(`http://127.0.0.1:${port}`, retries);
  t.after(() => {
    cache.close();
  });
  await assert.rejects(
    cache.request({ method: 'HEAD', path: 'x.narinfo' }),
    (error: unknown) =>
      FirnError.is(error) &&
      error.code === 'FIRN_E_CACHE_UNREACHABLE' &&
      error.message.includes('failed 4 times') &&
      error.message.includes('ECONNREFUSED'),
  );
  assert.equal(retries.length, 3);
});

test('5xx until the retries are spent is FIRN_E_PUSH_FAILED with the last answer', async (t) => {
  const url = await serve(t, (_request, _body, response) => {
    response.writeHead(500).end('disk on fire [FIRN_E_INTERNAL]\n');
  });
  const cache = client(url, []);
  t.after(() => {
    cache.close();
  });
  await assert.rejects(
    cache.request({ method: 'PUT', path: 'nar/y.nar', body: () => Buffer.from('y') }),
    (error: unknown) =>
      FirnError.is(error) &&
      error.code === 'FIRN_E_PUSH_FAILED' &&
      /failed PUT \/nar\/y.nar 4 times; last answer HTTP 500: disk on fire/.test(error.message),
  );
});

test('the bulk missing query, with credentials; other caches get one HEAD per path', async (t) => {
  const seen: string[] = [];
  const firnUrl = await serve(t, (request, body, response) => {
    seen.push(
      `${request.method ?? ''} ${request.url ?? ''} ${request.headers.authorization ?? ''}`,
    );
    const hashes = (JSON.parse(body.toString()) as { hashes: string[] }).hashes;
    response
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ missing: hashes.slice(1) }));
  });
  const heads: string[] = [];
  const otherUrl = await serve(t, (request, _body, response) => {
    heads.push(`${request.method ?? ''} ${request.url ?? ''}`);
    if (request.method === 'POST') response.writeHead(404).end();
    else response.writeHead(request.url === '/b.narinfo' ? 200 : 404).end();
  });
  const firnCache = client(firnUrl, [], 'Bearer secret');
  const other = client(otherUrl, []);
  t.after(() => {
    firnCache.close();
    other.close();
  });
  assert.deepEqual(await askMissing(firnCache, ['a', 'b', 'c']), {
    missing: ['b', 'c'],
    bulk: true,
  });
  assert.deepEqual(seen, ['POST /api/v1/missing Bearer secret']);
  assert.deepEqual(await askMissing(other, ['a', 'b', 'c']), { missing: ['a', 'c'], bulk: false });
  assert.deepEqual(heads.sort(), [
    'HEAD /a.narinfo',
    'HEAD /b.narinfo',
    'HEAD /c.narinfo',
    'POST /api/v1/missing',
  ]);
});

test('cache URLs: http(s) only, no query, no credentials; a path prefix is kept', () => {
  assert.equal(parseCacheUrl('http://host:5000').href, 'http://host:5000/');
  assert.equal(parseCacheUrl('https://host/cache').href, 'https://host/cache/');
  for (const bad of [
    'ftp://host',
    'http://host/?compression=zstd',
    'http://u:p@host',
    'not a url',
  ]) {
    assert.throws(
      () => parseCacheUrl(bad),
      (error: unknown) => FirnError.is(error) && error.code === 'FIRN_E_CONFIG_INVALID',
      bad,
    );
  }
});

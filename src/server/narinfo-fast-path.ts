/**
 * The hottest request a cache sees, `GET|HEAD /<hash>.narinfo`, answered on the raw Node server
 * before fastify builds its request, reply, child logger and hook chain: that machinery cost
 * about as much CPU as the whole rest of the answer. The answer, the access-log lines and the
 * metrics are the same as the fastify route's (src/server/routes/narinfo.ts), which still serves
 * everything this path declines: requests with a body or a query string, other names, requests
 * that arrive while the server is closing, failed lookups (for the one error handler) and, on a
 * private cache, every request without a valid read token (for the 401 and 403 answers).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { authenticate, scopeAllows, tokenFromAuthorization } from '../cache/tokens.ts';
import type { ServerContext } from './context.ts';
import type { BoundCounter } from './metrics.ts';

/** `/` + 32 nix-base32 characters + `.narinfo`, nothing else. */
const NARINFO_URL = /^\/[0-9a-df-np-sv-z]{32}\.narinfo$/;
const NARINFO_URL_LENGTH = 41;
/** The route the fastify path reports these requests under, so metrics stay comparable. */
const ROUTE = '/:name';

export interface FastPathOptions {
  readonly ctx: ServerContext;
  /** The request-id counter fastify uses too, so ids stay unique across both paths. */
  readonly nextRequestId: () => string;
  /** True once the server began closing: fastify then answers 503 and closes connections. */
  readonly closing: () => boolean;
}

type Listener = (request: IncomingMessage, response: ServerResponse) => void;

interface Counters {
  readonly ok: BoundCounter;
  readonly notFound: BoundCounter;
  readonly aborted: BoundCounter;
}

/** One request on its way through the fast path. */
interface Exchange {
  readonly request: IncomingMessage;
  readonly response: ServerResponse;
  readonly method: 'GET' | 'HEAD';
  readonly url: string;
  readonly started: number;
  /** The name of the read token, on a private cache. */
  readonly token: string | undefined;
}

/**
 * Wraps fastify's request listener: narinfo requests are answered here, everything else goes on
 * to `fastify`.
 */
export function withNarinfoFastPath(options: FastPathOptions, fastify: Listener): Listener {
  const { ctx, nextRequestId, closing } = options;
  const { metrics, logger } = ctx;
  const index = ctx.cache.index;
  const counters = (method: 'GET' | 'HEAD'): Counters => ({
    ok: metrics.requestCounter(ROUTE, method, 200),
    notFound: metrics.requestCounter(ROUTE, method, 404),
    aborted: metrics.requestCounter(ROUTE, method, 'aborted'),
  });
  const get = counters('GET');
  const head = counters('HEAD');
  const hits = metrics.narinfoLookups.labels('hit');
  const misses = metrics.narinfoLookups.labels('miss');

  /** Metrics and the access line, once the answer is out (as fastify's onResponse does). */
  const account = (exchange: Exchange, reqId: string, length: number): void => {
    const { method, url, token } = exchange;
    const status = exchange.response.statusCode;
    const counter = method === 'GET' ? get : head;
    (status === 200 ? counter.ok : counter.notFound).inc();
    if (method === 'GET') metrics.bytesOut.inc(length);
    if (!logger.isLevelEnabled('info')) return;
    const ms = (performance.now() - exchange.started).toFixed(1);
    logger.info(
      { reqId, method, url, status, ms: Number(ms), bytes: length, token },
      `${method} ${url} ${status} ${ms}ms`,
    );
  };

  /** Accounts once the response is done: finished (sent) or closed early (the client left). */
  const finish = (exchange: Exchange, reqId: string, length: number): void => {
    const { response, method, url } = exchange;
    // 'close' follows 'finish' on every response, so one listener tells both outcomes apart.
    response.on('close', () => {
      if (response.writableFinished) {
        account(exchange, reqId, length);
        return;
      }
      (method === 'GET' ? get : head).aborted.inc();
      if (logger.isLevelEnabled('info'))
        logger.info({ reqId, method, url }, `${method} ${url} aborted by the client`);
    });
  };

  const answer = (exchange: Exchange, text: string | undefined): void => {
    const { response } = exchange;
    const reqId = nextRequestId();
    const hashPart = exchange.url.slice(1, 33);
    if (text === undefined) {
      misses.inc();
      const reason = `${hashPart}.narinfo is not in this cache`;
      if (logger.isLevelEnabled('info'))
        logger.info({ reqId, code: 'FIRN_E_NOT_FOUND', reason }, 'request refused');
      const body = `${reason} [FIRN_E_NOT_FOUND]\n`;
      const length = Buffer.byteLength(body);
      response.writeHead(404, [
        'cache-control',
        'no-store',
        'content-type',
        'text/plain; charset=utf-8',
        'content-length',
        String(length),
      ]);
      response.end(body);
      finish(exchange, reqId, length);
      return;
    }
    hits.inc();
    index.touch(hashPart, Date.now());
    const length = Buffer.byteLength(text);
    response.writeHead(200, [
      'content-type',
      'text/x-nix-narinfo',
      'content-length',
      String(length),
    ]);
    response.end(text);
    finish(exchange, reqId, length);
  };

  const lookup = (exchange: Exchange): void => {
    index
      .getNarInfo(exchange.url.slice(1, 33))
      .then(
        (text) => {
          answer(exchange, text);
        },
        // Nothing was written yet: the fastify route looks again and reports the failure.
        () => {
          fastify(exchange.request, exchange.response);
        },
      )
      .catch((error: unknown) => {
        logger.error({ err: error, url: exchange.url }, 'narinfo request failed');
        exchange.response.destroy();
      });
  };

  return (request, response) => {
    const url = request.url;
    const method = request.method;
    if (
      url?.length !== NARINFO_URL_LENGTH ||
      (method !== 'GET' && method !== 'HEAD') ||
      !NARINFO_URL.test(url) ||
      closing()
    ) {
      fastify(request, response);
      return;
    }
    const headers = request.headers;
    // A body would have to be read or drained; fastify knows how.
    if (headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined) {
      fastify(request, response);
      return;
    }
    const started = performance.now();
    if (!ctx.auth.privateReads) {
      lookup({ request, response, method, url, started, token: undefined });
      return;
    }
    // A private cache: a valid read token is served here, anything else by the route's auth.
    const presented = tokenFromAuthorization(headers.authorization);
    if (presented === undefined) {
      fastify(request, response);
      return;
    }
    authenticate(index, presented).then(
      (token) => {
        if (token === undefined || !scopeAllows(token.scope, 'read')) fastify(request, response);
        else lookup({ request, response, method, url, started, token: token.name });
      },
      () => {
        fastify(request, response);
      },
    );
  };
}

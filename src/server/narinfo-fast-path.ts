/**
 * `GET|HEAD /<hash>.narinfo` on connections node:http parses, answered in a request listener
 * before fastify builds its request, reply, child logger and hook chain. Most narinfo requests
 * never get here: narinfo-connection.ts answers them on the socket itself and hands a
 * connection to node:http only when it meets something else (another request, a head split
 * across reads, a malformed one). This listener serves narinfo requests on those handed-over
 * connections with the same answer (narinfo-answer.ts: bytes, metrics, access line), and
 * passes on to fastify whatever it declines: requests with a body or a query string, other
 * names, requests that arrive while the server is closing, failed lookups (for the one error
 * handler) and, on a private cache, every request without a valid read token (for the 401 and
 * 403 answers).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readToken } from './auth.ts';
import type { ServerContext } from './context.ts';
import {
  answerFields,
  NARINFO_URL,
  NARINFO_URL_LENGTH,
  type NarinfoAnswers,
  type NarinfoMethod,
  type NarinfoStatus,
} from './narinfo-answer.ts';

export interface FastPathOptions {
  readonly ctx: ServerContext;
  readonly answers: NarinfoAnswers;
  /** True once the server began closing: fastify then answers 503 and closes connections. */
  readonly closing: () => boolean;
}

type Listener = (request: IncomingMessage, response: ServerResponse) => void;

/** One request on its way through the fast path. */
interface Exchange {
  readonly request: IncomingMessage;
  readonly response: ServerResponse;
  readonly method: NarinfoMethod;
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
  const { ctx, answers, closing } = options;
  const index = ctx.cache.index;

  /** Accounts once the response is done: finished (sent) or closed early (the client left). */
  const finish = (
    exchange: Exchange,
    status: NarinfoStatus,
    reqId: string,
    length: number,
  ): void => {
    const { response, method, url } = exchange;
    // 'close' follows 'finish' on every response, so one listener tells both outcomes apart.
    response.on('close', () => {
      if (response.writableFinished) {
        answers.sent(method, url, status, length, exchange.started, reqId, exchange.token);
      } else {
        answers.aborted(method, url, reqId);
      }
    });
  };

  const answer = (exchange: Exchange, narinfo: string | undefined): void => {
    const { response } = exchange;
    const reqId = answers.requestId();
    const body = answers.body(exchange.url.slice(1, 33), narinfo, reqId);
    const length = Buffer.byteLength(body);
    const status = narinfo === undefined ? 404 : 200;
    response.writeHead(status, answerFields(status, length));
    response.end(body);
    finish(exchange, status, reqId, length);
  };

  const lookup = (exchange: Exchange): void => {
    index
      .getNarInfo(exchange.url.slice(1, 33))
      .then(
        (narinfo) => {
          answer(exchange, narinfo);
        },
        // Nothing was written yet: the fastify route looks again and reports the failure.
        () => {
          fastify(exchange.request, exchange.response);
        },
      )
      .catch((error: unknown) => {
        ctx.logger.error({ err: error, url: exchange.url }, 'narinfo request failed');
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
    readToken(index, headers.authorization).then(
      (token) => {
        if (token === undefined) fastify(request, response);
        else lookup({ request, response, method, url, started, token: token.name });
      },
      () => {
        fastify(request, response);
      },
    );
  };
}

/**
 * HTTP wiring of the cache: fastify with bodies left unread (routes stream them), one error
 * handler that turns the catalogue into status codes, one access-log line per request, and the
 * Prometheus counters. Domain work happens in src/cache; routes only translate.
 */
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { STATUS_CODES, createServer } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Cache } from '../cache/cache.ts';
import type { ServeConfig } from '../config/serve-config.ts';
import { FirnError } from '../errors.ts';
import { requestToken } from './auth.ts';
import type { ServerContext } from './context.ts';
import { createMetrics } from './metrics.ts';
import { createNarinfoAnswers } from './narinfo-answer.ts';
import { installNarinfoConnections } from './narinfo-connection.ts';
import { withNarinfoFastPath } from './narinfo-fast-path.ts';
import { registerCacheInfo } from './routes/cache-info.ts';
import { registerExtras } from './routes/extras.ts';
import { registerNar } from './routes/nar.ts';
import { registerNarInfo } from './routes/narinfo.ts';
import { registerOps } from './routes/ops.ts';
import { registerPathsBatch } from './routes/paths-batch.ts';

export interface AppOptions {
  readonly cache: Cache;
  readonly config: ServeConfig;
  readonly logger: Logger;
}

const TOUCH_FLUSH_MS = 10_000;
const KEEP_ALIVE_MS = 65_000;

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const logger: FastifyBaseLogger = options.logger;
  const ctx: ServerContext = {
    cache: options.cache,
    config: options.config,
    metrics: createMetrics(options.cache.index),
    auth: { index: options.cache.index, privateReads: options.config.private },
    logger: options.logger,
    startedAt: Date.now(),
  };
  let requestCount = 0;
  // fastify's own format (req-1, req-2, …), one counter for both paths.
  const nextRequestId = (): string => {
    requestCount = (requestCount + 1) & 0x7fffffff;
    return `req-${requestCount.toString(36)}`;
  };
  let closing = false;
  const app: FastifyInstance = Fastify({
    loggerInstance: logger,
    // Our own onResponse hook writes one access line per request instead.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: nextRequestId,
    // narinfo GET/HEAD, the hottest request, is answered before fastify sees it: on the socket
    // itself while a connection sends nothing else, then (on connections handed to node:http)
    // in front of fastify's handler, which gets everything the two decline.
    serverFactory: (handler) => {
      const narinfo = {
        ctx,
        answers: createNarinfoAnswers(ctx, nextRequestId),
        closing: () => closing,
      };
      const server = createServer(withNarinfoFastPath(narinfo, handler));
      server.keepAliveTimeout = KEEP_ALIVE_MS;
      // Multi-GiB NARs stream for minutes; node's 300 s default would cut them off.
      server.requestTimeout = 0;
      server.setTimeout(0);
      installNarinfoConnections(server, narinfo);
      return server;
    },
    keepAliveTimeout: KEEP_ALIVE_MS,
    return503OnClosing: true,
    exposeHeadRoutes: false,
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 512 },
    // Malformed URLs and over-long names get the same FIRN_E_ answers as every other refusal.
    frameworkErrors: (error, request, reply) => {
      sendError(ctx, error, request, reply);
    },
    clientErrorHandler: answerClientError,
  });
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });

  // Bodies are streamed or read with limits by the routes themselves.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => {
    done(null);
  });

  app.setErrorHandler((error: FastifyError, request, reply) =>
    sendError(ctx, error, request, reply),
  );
  app.setNotFoundHandler((request, reply) => {
    request.raw.resume();
    void reply
      .code(404)
      .header('cache-control', 'no-store')
      .type('text/plain')
      .send(`not found: ${request.url} [FIRN_E_NOT_FOUND]\n`);
  });
  app.addHook('onResponse', (request, reply, done) => {
    logAccess(ctx, request, reply);
    done();
  });
  // A client that goes away before its answer gets no access line otherwise.
  app.addHook('onRequestAbort', (request, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    ctx.metrics.requestCounter(route, request.method, 'aborted').inc();
    request.log.info(
      { method: request.method, url: request.url },
      `${request.method} ${request.url} aborted by the client`,
    );
    done();
  });

  registerCacheInfo(app, ctx);
  registerNarInfo(app, ctx);
  registerNar(app, ctx);
  registerExtras(app, ctx);
  registerOps(app, ctx);
  registerPathsBatch(app, ctx);

  const flush = setInterval(() => {
    ctx.cache.index.flushTouches().catch((error: unknown) => {
      ctx.logger.warn({ err: error }, 'could not record last-access times');
    });
  }, TOUCH_FLUSH_MS);
  flush.unref();
  app.addHook('onClose', async () => {
    clearInterval(flush);
    await ctx.cache.index.flushTouches();
  });
  await app.ready();
  return app;
}

function sendError(
  ctx: ServerContext,
  error: FastifyError | FirnError,
  request: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  const firn = FirnError.is(error);
  const status = firn ? error.httpStatus : (error.statusCode ?? 500);
  const code = firn ? error.code : status >= 500 ? 'FIRN_E_INTERNAL' : 'FIRN_E_BAD_REQUEST';
  if (request.method === 'PUT' || request.method === 'POST') {
    ctx.metrics.refusedUploads.inc({ reason: code });
  }
  if (!request.raw.complete) {
    // The rest of the body is not wanted. A body stream a route stopped reading midway cannot
    // be drained, and the connection would hang on the client's next request: close it once
    // the answer is out, and keep reading meanwhile so the client sees the answer.
    reply.header('connection', 'close');
    request.raw.resume();
  }
  if (status >= 500) request.log.error({ err: error }, 'request failed');
  else request.log.info({ code, reason: error.message }, 'request refused');
  const hint = firn && error.hint !== undefined ? `hint: ${error.hint}\n` : '';
  if (status === 401) reply.header('www-authenticate', 'Basic realm="firn"');
  if (status === 404) reply.header('cache-control', 'no-store');
  if (status === 416 && firn)
    reply.header(
      'content-range',
      `bytes */${typeof error.details?.size === 'number' ? error.details.size : '*'}`,
    );
  const message = status >= 500 && !firn ? 'internal error' : error.message;
  return reply.code(status).type('text/plain; charset=utf-8').send(`${message} [${code}]\n${hint}`);
}

/** Requests too malformed for fastify to see (bad framing, huge headers) still get a code. */
function answerClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed || !socket.writable) return;
  const status =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? 431
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? 408
        : 400;
  const body = `malformed HTTP request (${error.code ?? 'unknown'}) [FIRN_E_BAD_REQUEST]\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nConnection: close\r\n` +
      `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

function logAccess(ctx: ServerContext, request: FastifyRequest, reply: FastifyReply): void {
  const route = request.routeOptions.url ?? 'unmatched';
  const status = reply.statusCode;
  ctx.metrics.requestCounter(route, request.method, status).inc();
  const length = Number(reply.getHeader('content-length') ?? 0);
  // Counted once the whole body went out; an aborted download counts nothing.
  if (request.method === 'GET' && reply.raw.writableFinished) ctx.metrics.bytesOut.inc(length);
  // Above info the line would be dropped anyway; don't build it on every request.
  if (!ctx.logger.isLevelEnabled('info')) return;
  const ms = reply.elapsedTime.toFixed(1);
  request.log.info(
    {
      method: request.method,
      url: request.url,
      status,
      ms: Number(ms),
      bytes: length,
      token: requestToken(request)?.name,
    },
    `${request.method} ${request.url} ${status} ${ms}ms`,
  );
}

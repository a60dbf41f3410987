/**
 * The answer to `GET|HEAD /<hash>.narinfo`, made once for the two paths that write it: the
 * connection-level path (narinfo-connection.ts) and the request listener in front of fastify
 * (narinfo-fast-path.ts). Both send the same status, header fields and body, count the same
 * metrics and write the same log lines as the fastify route (routes/narinfo.ts).
 */
import { STATUS_CODES, type Server } from 'node:http';
import type { ServerContext } from './context.ts';
import type { BoundCounter } from './metrics.ts';

/** `/` + 32 nix-base32 characters + `.narinfo`, nothing else. */
export const NARINFO_URL = /^\/[0-9a-df-np-sv-z]{32}\.narinfo$/;
export const NARINFO_URL_LENGTH = 41;
/** The route the fastify path reports these requests under, so metrics stay comparable. */
const ROUTE = '/:name';

export type NarinfoMethod = 'GET' | 'HEAD';
export type NarinfoStatus = 200 | 404;

/** Header fields before content-length, lower case and in order, as node:http writes them. */
const FIELDS: Readonly<Record<NarinfoStatus, readonly string[]>> = {
  200: ['content-type', 'text/x-nix-narinfo'],
  404: ['cache-control', 'no-store', 'content-type', 'text/plain; charset=utf-8'],
};

/** The fields for `response.writeHead`. */
export function answerFields(status: NarinfoStatus, length: number): string[] {
  return [...FIELDS[status], 'content-length', String(length)];
}

/** The status line and fields up to the content-length value, for writing on a raw socket. */
export function answerHeadStart(status: NarinfoStatus): string {
  const fields = FIELDS[status];
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
  for (let i = 0; i < fields.length; i += 2)
    head += `${fields[i] ?? ''}: ${fields[i + 1] ?? ''}\r\n`;
  return `${head}content-length: `;
}

/**
 * The rest of a raw answer's head after the content-length value: node:http's own fields after
 * the caller's, `Date` (remade once a second, as node caches it), `Connection` and, when kept
 * alive, `Keep-Alive: timeout=<keepAliveTimeout in s>`; then the blank line.
 */
export function answerHeadEnd(server: Server): (close: boolean) => string {
  let second = -1;
  let keepAlive = '';
  let date = '';
  return (close) => {
    const now = Date.now();
    if (Math.floor(now / 1000) !== second) {
      second = Math.floor(now / 1000);
      date = `\r\nDate: ${new Date(now).toUTCString()}\r\nConnection: `;
      const ms = server.keepAliveTimeout;
      keepAlive = `${date}keep-alive\r\n${ms > 0 ? `Keep-Alive: timeout=${Math.floor(ms / 1000)}\r\n` : ''}\r\n`;
    }
    return close ? `${date}close\r\n\r\n` : keepAlive;
  };
}

export interface NarinfoAnswers {
  /** An id for this request's log lines; '' when info lines are off (nothing would show it). */
  requestId(): string;
  /**
   * The body for a lookup's result: the narinfo (a hit, counted and touched for gc) or the 404
   * text (a miss, counted, and the refusal logged as the route's error handler logs it).
   */
  body(hashPart: string, narinfo: string | undefined, reqId: string): string;
  /** Counters and the access line once an answer is out. */
  sent(
    method: NarinfoMethod,
    url: string,
    status: NarinfoStatus,
    length: number,
    started: number,
    reqId: string,
    token: string | undefined,
  ): void;
  /** The client left before its answer was out. */
  aborted(method: NarinfoMethod, url: string, reqId: string): void;
}

interface Counters {
  readonly ok: BoundCounter;
  readonly notFound: BoundCounter;
  readonly aborted: BoundCounter;
}

export function createNarinfoAnswers(
  ctx: ServerContext,
  nextRequestId: () => string,
): NarinfoAnswers {
  const { metrics, logger } = ctx;
  const index = ctx.cache.index;
  const counters = (method: NarinfoMethod): Counters => ({
    ok: metrics.requestCounter(ROUTE, method, 200),
    notFound: metrics.requestCounter(ROUTE, method, 404),
    aborted: metrics.requestCounter(ROUTE, method, 'aborted'),
  });
  const get = counters('GET');
  const head = counters('HEAD');
  const hits = metrics.narinfoLookups.labels('hit');
  const misses = metrics.narinfoLookups.labels('miss');
  const bytesOut = metrics.bytesOut;
  return {
    requestId: () => (logger.isLevelEnabled('info') ? nextRequestId() : ''),
    body(hashPart, narinfo, reqId) {
      if (narinfo !== undefined) {
        hits.inc();
        index.touch(hashPart, Date.now());
        return narinfo;
      }
      misses.inc();
      const reason = `${hashPart}.narinfo is not in this cache`;
      if (logger.isLevelEnabled('info'))
        logger.info({ reqId, code: 'FIRN_E_NOT_FOUND', reason }, 'request refused');
      return `${reason} [FIRN_E_NOT_FOUND]\n`;
    },
    sent(method, url, status, length, started, reqId, token) {
      const counter = method === 'GET' ? get : head;
      (status === 200 ? counter.ok : counter.notFound).inc();
      if (method === 'GET') bytesOut.inc(length);
      if (!logger.isLevelEnabled('info')) return;
      const ms = (performance.now() - started).toFixed(1);
      logger.info(
        { reqId, method, url, status, ms: Number(ms), bytes: length, token },
        `${method} ${url} ${status} ${ms}ms`,
      );
    },
    aborted(method, url, reqId) {
      (method === 'GET' ? get : head).aborted.inc();
      if (logger.isLevelEnabled('info'))
        logger.info({ reqId, method, url }, `${method} ${url} aborted by the client`);
    },
  };
}

/**
 * narinfo GETs answered on the socket, before node:http parses anything. node:http costs about
 * 14 µs of CPU per request on a 2-core box even for a constant answer (parser, IncomingMessage,
 * ServerResponse, their streams and events); reading the head here and writing head and body in
 * one `socket.write` costs about a third less, and a cache's clients send narinfo GETs more than
 * anything else.
 *
 * Each connection starts here. Every complete head that narinfo-head.ts recognises is answered
 * in order, with the bytes node:http and narinfo-fast-path.ts would write and the same metrics
 * and access line (narinfo-answer.ts). At the first thing that is not such a head — another
 * request, a head not complete in what was read (split, slow or oversized), a private cache's
 * request without a valid read token, a failed lookup, or any request once the server is
 * closing — the connection goes to node:http for good, every byte not answered put back in
 * front of the socket's data, once every answer before it was written. node:http then does
 * everything as if it had had the connection from the start: its limits, timeouts, error
 * answers, bodies, and narinfo-fast-path.ts for later narinfo requests.
 *
 * node:http keeps listening and closing: it is still its server. Connections answered here are
 * not in node's connection list, so this keeps its own and extends `closeIdleConnections` and
 * `closeAllConnections` to them.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { Counter } from 'prom-client';
import type { TokenRecord } from '../cache/cache-index.ts';
import { readToken } from './auth.ts';
import type { ServerContext } from './context.ts';
import { answerHeadEnd, answerHeadStart, type NarinfoAnswers } from './narinfo-answer.ts';
import { emptyHead, HEAD_INCOMPLETE, HEAD_OK, parseNarinfoHead } from './narinfo-head.ts';
import type { BoundCounter } from './metrics.ts';

export interface NarinfoConnectionOptions {
  readonly ctx: ServerContext;
  readonly answers: NarinfoAnswers;
  /** True once the server began closing: fastify then answers 503 and closes connections. */
  readonly closing: () => boolean;
}

type ConnectionListener = (this: Server, socket: Socket) => void;

/** Why a connection went to node:http: the label of the hand-over counter. */
type Reason = 'request' | 'incomplete' | 'unauthorized' | 'lookup' | 'closing';
const REASONS: readonly Reason[] = ['request', 'incomplete', 'unauthorized', 'lookup', 'closing'];

/** Answers waiting to be written are written once they reach this (a pipelined flood). */
const FLUSH_BYTES = 64 * 1024;
const FOUND_HEAD = answerHeadStart(200);
const NOT_FOUND_HEAD = answerHeadStart(404);

/** What the raw connections of one server share. */
interface Shared {
  readonly server: Server;
  readonly nodeListener: ConnectionListener;
  readonly options: NarinfoConnectionOptions;
  readonly open: Set<RawConnection>;
  readonly handovers: Readonly<Record<Reason, BoundCounter>>;
  /** The head's end after content-length's value: Date and connection fields, blank line. */
  readonly tail: (close: boolean) => string;
}

/**
 * Puts the raw path in front of node:http's own connection listener on `server`. Leaves the
 * server alone if its connections are not node's alone (another 'connection' listener).
 */
export function installNarinfoConnections(server: Server, options: NarinfoConnectionOptions): void {
  const listeners = server.listeners('connection');
  const nodeListener = listeners[0] as ConnectionListener | undefined;
  if (listeners.length !== 1 || nodeListener === undefined) return;
  const counter = new Counter({
    name: 'firn_http_raw_handovers_total',
    help: 'Connections the raw narinfo path handed to node:http, by what it met: another request (request), a head not complete in a read (incomplete), no valid read token (unauthorized), a failed lookup (lookup), shutdown (closing)',
    labelNames: ['reason'] as const,
    registers: [options.ctx.metrics.registry],
  });
  const handovers = Object.fromEntries(
    REASONS.map((reason) => [reason, counter.labels(reason)]),
  ) as Record<Reason, BoundCounter>;
  const shared: Shared = {
    server,
    nodeListener,
    options,
    open: new Set(),
    handovers,
    tail: answerHeadEnd(server),
  };
  server.removeListener('connection', nodeListener);
  server.on('connection', (socket: Socket) => {
    // node:http counts requests per connection for this limit; leave such servers to it.
    if ((server.maxRequestsPerSocket ?? 0) > 0) nodeListener.call(server, socket);
    else shared.open.add(new RawConnection(shared, socket));
  });
  const closeIdle = server.closeIdleConnections.bind(server);
  server.closeIdleConnections = () => {
    closeIdle();
    for (const connection of shared.open) connection.closeIfIdle();
  };
  const closeAll = server.closeAllConnections.bind(server);
  server.closeAllConnections = () => {
    closeAll();
    for (const connection of shared.open) connection.destroy();
  };
}

/** One connection while the raw path has it. */
class RawConnection {
  readonly #shared: Shared;
  readonly #socket: Socket;
  readonly #head = emptyHead();
  /** Bytes read and not yet answered are `#buffer` from `#offset` on (latin1: byte-exact). */
  #buffer = '';
  #offset = 0;
  /** Answers made and not yet written, and whether all of them are one byte per character. */
  #out = '';
  #outLatin1 = true;
  /** A token check or lookup is under way for the head at `#offset`. */
  #busy = false;
  /** socket.write asked us to wait for 'drain': no more answers (and no reading) until then. */
  #blocked = false;
  /** We paused the socket and owe it a resume. */
  #paused = false;
  /** The client ended its side; answer what is complete, then end ours. */
  #ended = false;
  /** Answered a `Connection: close` request: the connection is over. */
  #done = false;
  #started = 0;
  #token: string | undefined = undefined;

  constructor(shared: Shared, socket: Socket) {
    this.#shared = shared;
    this.#socket = socket;
    const { keepAliveTimeout, keepAliveTimeoutBuffer } = shared.server;
    // As node:http after each response: idle keep-alive connections close after this long.
    if (keepAliveTimeout > 0) socket.setTimeout(keepAliveTimeout + keepAliveTimeoutBuffer);
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('drain', this.#onDrain);
    socket.on('timeout', this.#onTimeout);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
  }

  /** Destroys the connection if no request is under way and every answer is written. */
  closeIfIdle(): void {
    if (!this.#busy && this.#offset === this.#buffer.length && this.#socket.writableLength === 0)
      this.#socket.destroy();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  readonly #onData = (chunk: Buffer): void => {
    if (this.#done) return;
    const text = chunk.toString('latin1');
    // Appended, never re-sliced: a pending request's offsets stay valid.
    if (this.#offset === this.#buffer.length) {
      this.#buffer = text;
      this.#offset = 0;
    } else this.#buffer += text;
    if (this.#busy || this.#blocked) this.#pause();
    else this.#serve();
  };

  readonly #onEnd = (): void => {
    if (this.#done) return;
    this.#ended = true;
    if (!this.#busy && !this.#blocked) this.#serve();
  };

  readonly #onDrain = (): void => {
    if (!this.#blocked) return;
    this.#blocked = false;
    if (!this.#busy) this.#serve();
  };

  readonly #onTimeout = (): void => {
    this.#socket.destroy();
  };

  readonly #onError = (): void => {
    this.#socket.destroy();
  };

  readonly #onClose = (): void => {
    this.#shared.open.delete(this);
  };

  /** Starts on the next head, or writes what is answered and waits for more. */
  #serve(): void {
    if (this.#offset === this.#buffer.length) {
      this.#idle();
      return;
    }
    if (this.#out.length >= FLUSH_BYTES) {
      this.#flush();
      if (this.#blocked) {
        this.#pause();
        return;
      }
    }
    const { ctx, closing } = this.#shared.options;
    if (closing()) {
      this.#handOver('closing');
      return;
    }
    const result = parseNarinfoHead(this.#buffer, this.#offset, this.#head);
    if (result !== HEAD_OK) {
      this.#handOver(result === HEAD_INCOMPLETE ? 'incomplete' : 'request');
      return;
    }
    this.#started = performance.now();
    this.#token = undefined;
    if (!ctx.auth.privateReads) {
      this.#lookup();
      return;
    }
    // A private cache: a valid read token is served here, anything else by the route's auth.
    this.#busy = true;
    readToken(ctx.cache.index, this.#head.authorization).then(this.#onToken, this.#onTokenFailed);
  }

  #lookup(): void {
    this.#busy = true;
    this.#shared.options.ctx.cache.index
      .getNarInfo(this.#head.url.slice(1, 33))
      .then(this.#onNarinfo, this.#onLookupFailed);
  }

  readonly #onToken = (token: TokenRecord | undefined): void => {
    try {
      this.#authorized(token);
    } catch (error) {
      this.#fail(error);
    }
  };

  readonly #onTokenFailed = (): void => {
    this.#busy = false;
    this.#handOver('unauthorized');
  };

  #authorized(token: TokenRecord | undefined): void {
    if (token === undefined) {
      this.#busy = false;
      this.#handOver('unauthorized');
      return;
    }
    this.#token = token.name;
    this.#lookup();
  }

  readonly #onLookupFailed = (): void => {
    // Nothing was written for it: the fastify route looks again and reports the failure.
    this.#busy = false;
    this.#handOver('lookup');
  };

  readonly #onNarinfo = (narinfo: string | undefined): void => {
    try {
      this.#answer(narinfo);
    } catch (error) {
      this.#fail(error);
    }
  };

  /** A promise callback threw: nothing sensible can be written any more. */
  #fail(error: unknown): void {
    this.#shared.options.ctx.logger.error({ err: error }, 'narinfo request failed');
    this.#socket.destroy();
  }

  #answer(narinfo: string | undefined): void {
    this.#busy = false;
    const head = this.#head;
    const { answers } = this.#shared.options;
    const reqId = answers.requestId();
    const body = answers.body(head.url.slice(1, 33), narinfo, reqId);
    if (this.#socket.destroyed) {
      answers.aborted(head.method, head.url, reqId);
      return;
    }
    const status = narinfo === undefined ? 404 : 200;
    const length = Buffer.byteLength(body);
    // A narinfo is ASCII; should one not be, the whole batch goes out as UTF-8 (same bytes).
    if (length !== body.length) this.#outLatin1 = false;
    this.#out += `${status === 200 ? FOUND_HEAD : NOT_FOUND_HEAD}${length}${this.#shared.tail(head.close)}${head.method === 'GET' ? body : ''}`;
    this.#offset = head.end;
    answers.sent(head.method, head.url, status, length, this.#started, reqId, this.#token);
    if (head.close) this.#finish();
    else this.#serve();
  }

  /** Everything read is answered: write, and read on (or wait for 'drain'). */
  #idle(): void {
    this.#buffer = '';
    this.#offset = 0;
    this.#flush();
    if (this.#blocked) this.#pause();
    else if (this.#ended) this.#finish();
    else if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  /** Writes the answers, ends the connection and ignores whatever else arrives. */
  #finish(): void {
    this.#flush();
    this.#done = true;
    this.#buffer = '';
    this.#offset = 0;
    this.#socket.end();
    // Read on (and ignore it) so the client's own end is seen and the socket closes.
    if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  #flush(): void {
    if (this.#out === '') return;
    const out = this.#out;
    const encoding = this.#outLatin1 ? 'latin1' : 'utf8';
    this.#out = '';
    this.#outLatin1 = true;
    if (!this.#socket.writable) return;
    if (!this.#socket.write(out, encoding)) this.#blocked = true;
  }

  #pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#socket.pause();
  }

  /**
   * Gives the connection to node:http for good: answers so far written first (so responses
   * stay in order), every byte not answered put back in front of the socket's data.
   */
  #handOver(reason: Reason): void {
    const socket = this.#socket;
    this.#shared.handovers[reason].inc();
    if (this.#ended || socket.destroyed) {
      // node:http would never hear of the end it already missed: close as it would.
      this.#finish();
      return;
    }
    this.#flush();
    socket.removeListener('data', this.#onData);
    socket.removeListener('end', this.#onEnd);
    socket.removeListener('drain', this.#onDrain);
    socket.removeListener('timeout', this.#onTimeout);
    socket.removeListener('error', this.#onError);
    socket.removeListener('close', this.#onClose);
    socket.setTimeout(0);
    this.#shared.open.delete(this);
    const rest = this.#buffer.slice(this.#offset);
    this.#buffer = '';
    this.#offset = 0;
    socket.pause();
    if (rest !== '') socket.unshift(Buffer.from(rest, 'latin1'));
    this.#shared.nodeListener.call(this.#shared.server, socket);
    socket.resume();
  }
}

/**
 * HTTP to a binary cache for uploads: keep-alive connections, the push token on every request,
 * and retries with backoff for what may pass (network errors, 5xx, 408, 429). A 4xx is final and
 * quotes the cache's own message, which ends in its FIRN_E_ code.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FirnError, firnError, type ErrorCode } from '../errors.ts';
import { sleep } from '../concurrency.ts';
import { backoffDelay, type BackoffPolicy } from './backoff.ts';

export interface RetryEvent {
  /** e.g. `PUT /nar/….nar.zst` */
  readonly request: string;
  /** The retry about to be made, 1-based. */
  readonly attempt: number;
  readonly retries: number;
  readonly delayMs: number;
  readonly reason: string;
}

export interface CacheClientOptions {
  readonly url: string;
  /** A whole `Authorization` header value, or undefined to send none. */
  readonly authorization?: string | undefined;
  readonly backoff: BackoffPolicy;
  /** Connections kept per cache; a few more than the upload concurrency. */
  readonly maxSockets?: number;
  /** A request that sends or receives nothing for this long is retried. */
  readonly idleTimeoutMs?: number;
  readonly onRetry?: (event: RetryEvent) => void;
  /** How the credentials were found, for hints on 401/403. */
  readonly credentialSource?: string;
}

export interface CacheRequest {
  readonly method: 'GET' | 'HEAD' | 'PUT' | 'POST';
  /** Relative to the cache URL, without a leading slash: `nar/x.nar.zst`, `x.narinfo`. */
  readonly path: string;
  readonly headers?: Readonly<Record<string, string | number>>;
  /** Made anew for each attempt, so a retry sends the whole body again. */
  readonly body?: () => Buffer | Readable;
  readonly signal?: AbortSignal | undefined;
}

export interface CacheResponse {
  readonly status: number;
  readonly body: Buffer;
}

const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** A failure that another attempt may fix. */
class Transient extends Error {}

/** Reading the local body failed: retrying would fail again, and it is not the cache's fault. */
class BodyError extends Error {}

/** The cache's certificate is not trusted: retrying would fail again. */
class TlsTrustError extends Error {}

/**
 * Node's codes for a certificate that does not verify (OpenSSL's names, plus the host name
 * check); a TLS handshake that merely breaks is transient and stays retried.
 */
const TLS_TRUST_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REVOKED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

export class CacheClient {
  readonly url: string;
  readonly #base: URL;
  readonly #options: CacheClientOptions;
  readonly #agent: HttpAgent;
  readonly #request: typeof httpRequest;

  constructor(options: CacheClientOptions) {
    this.#base = parseCacheUrl(options.url);
    this.url = this.#base.href.replace(/\/$/, '');
    this.#options = options;
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 8 };
    if (this.#base.protocol === 'https:') {
      // Loaded only when needed: TLS costs a push to a plain-HTTP cache ~15 ms of start-up.
      const https = process.getBuiltinModule('node:https');
      this.#agent = new https.Agent(agentOptions);
      this.#request = https.request;
    } else {
      this.#agent = new HttpAgent(agentOptions);
      this.#request = httpRequest;
    }
  }

  get host(): string {
    return this.#base.hostname;
  }

  /**
   * Sends `spec`, retrying transient failures. Returns the final response whatever its status
   * below 500 (callers decide what 404 means); throws FIRN_E_CACHE_UNREACHABLE or
   * FIRN_E_PUSH_FAILED once the retries are spent.
   */
  async request(spec: CacheRequest): Promise<CacheResponse> {
    const { backoff } = this.#options;
    const what = `${spec.method} /${spec.path}`;
    for (let attempt = 0; ; attempt++) {
      let reason: string;
      let status: number | undefined;
      try {
        const response = await this.#once(spec);
        if (!isRetryableStatus(response.status)) return response;
        status = response.status;
        reason = `HTTP ${response.status}: ${serverMessage(response.body).message}`;
      } catch (error) {
        if (!(error instanceof Transient)) throw error;
        reason = error.message;
      }
      if (attempt >= backoff.retries) throw this.#exhausted(what, attempt + 1, reason, status);
      const delayMs = backoffDelay(backoff, attempt);
      this.#options.onRetry?.({
        request: what,
        attempt: attempt + 1,
        retries: backoff.retries,
        delayMs,
        reason,
      });
      await sleep(delayMs, spec.signal);
    }
  }

  /** Like `request`, but any status outside `ok` is a FirnError quoting the cache. */
  async expect(spec: CacheRequest, ok: readonly number[]): Promise<CacheResponse> {
    const response = await this.request(spec);
    if (!ok.includes(response.status)) throw this.refusal(spec, response);
    return response;
  }

  /** The error for a response the caller cannot use. */
  refusal(spec: CacheRequest, response: CacheResponse): FirnError {
    const { message, code, hint } = serverMessage(response.body);
    const said = `${message}${code === undefined ? '' : ` (${code})`}`;
    const text = `the cache at ${this.url} refused ${spec.method} /${spec.path} with HTTP ${response.status}: ${said}`;
    const details = { status: response.status, serverCode: code, request: spec.path };
    if (response.status === 401 || response.status === 403) {
      const errorCode: ErrorCode =
        response.status === 401 ? 'FIRN_E_AUTH_REQUIRED' : 'FIRN_E_AUTH_FORBIDDEN';
      return firnError(errorCode, text, {
        details,
        hint: `uploads need a token with push scope (${this.#options.credentialSource ?? 'none was found'}); pass --token-file, set FIRN_TOKEN, or add 'machine ${this.host} login firn password <token>' to Nix's netrc file`,
      });
    }
    return firnError('FIRN_E_PUSH_FAILED', text, { details, hint });
  }

  close(): void {
    this.#agent.destroy();
  }

  #exhausted(what: string, attempts: number, reason: string, status?: number): FirnError {
    if (status !== undefined) {
      return firnError(
        'FIRN_E_PUSH_FAILED',
        `the cache at ${this.url} failed ${what} ${attempts} times; last answer ${reason}`,
        { hint: 'look at the cache server log; what was not confirmed stays to be pushed again' },
      );
    }
    return firnError(
      'FIRN_E_CACHE_UNREACHABLE',
      `cannot reach the cache at ${this.url}: ${what} failed ${attempts} times; last error: ${reason}`,
      {
        hint: 'check the URL (--cache, FIRN_CACHE) and that the cache is running; nothing unconfirmed was marked done, so run again later',
      },
    );
  }

  #once(spec: CacheRequest): Promise<CacheResponse> {
    const url = new URL(spec.path, this.#base);
    const headers: Record<string, string | number> = { ...spec.headers };
    if (this.#options.authorization !== undefined)
      headers.authorization = this.#options.authorization;
    return new Promise<CacheResponse>((resolve, reject) => {
      let settled = false;
      const fail = (error: Error): void => {
        if (settled) return;
        settled = true;
        request.destroy();
        reject(error);
      };
      const request = this.#request(url, {
        method: spec.method,
        headers,
        agent: this.#agent,
        timeout: this.#options.idleTimeoutMs ?? 60_000,
        ...(spec.signal === undefined ? {} : { signal: spec.signal }),
      });
      request.on('timeout', () => {
        fail(new Transient(`no data for ${(this.#options.idleTimeoutMs ?? 60_000) / 1000} s`));
      });
      request.on('error', (error: NodeJS.ErrnoException) => {
        if (spec.signal?.aborted === true) fail(spec.signal.reason as Error);
        else if (TLS_TRUST_CODES.has(error.code ?? '')) {
          fail(new TlsTrustError(`${error.code ?? ''}: ${error.message}`));
        } else fail(new Transient(error.code ?? error.message));
      });
      request.on('response', (response: IncomingMessage) => {
        readAll(response).then(
          (body) => {
            if (settled) return;
            settled = true;
            resolve({ status: response.statusCode ?? 0, body });
          },
          (error: unknown) => {
            fail(new Transient(`reading the answer failed: ${(error as Error).message}`));
          },
        );
      });
      const body = spec.body?.();
      if (body === undefined) request.end();
      else if (Buffer.isBuffer(body)) request.end(body);
      else {
        let bodyError: Error | undefined;
        body.once('error', (error) => (bodyError = error));
        pipeline(body, request).catch((error: unknown) => {
          // The cache closing the connection surfaces here too; only a local read is final.
          if (bodyError === undefined) fail(new Transient((error as Error).message));
          // The body's own verdict (a store path that changed while it was read) stands.
          else if (FirnError.is(bodyError)) fail(bodyError);
          else fail(new BodyError(`reading the upload failed: ${bodyError.message}`));
        });
      }
    }).catch((error: unknown) => {
      if (error instanceof BodyError) throw firnError('FIRN_E_IO', error.message);
      if (error instanceof TlsTrustError) {
        throw firnError(
          'FIRN_E_CACHE_TLS',
          `the cache at ${this.url} presented a TLS certificate firn does not trust (${error.message})`,
          {
            hint: 'give the cache a certificate from a CA this machine trusts, or point NODE_EXTRA_CA_CERTS at the CA file (PEM) that signed it',
          },
        );
      }
      throw error;
    });
  }
}

function isRetryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

async function readAll(response: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_RESPONSE_BYTES) throw new Error('the answer is too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** firn serve answers `message [FIRN_E_CODE]\nhint: …`; other caches say anything. */
export function serverMessage(body: Buffer): {
  message: string;
  code: string | undefined;
  hint: string | undefined;
} {
  const text = body.toString('utf8').trim();
  const [first = '', ...rest] = text.split('\n');
  const match = /^(.*?)\s*\[(FIRN_E_[A-Z0-9_]+)\]$/.exec(first);
  const hintLine = rest.find((line) => line.startsWith('hint: '));
  return {
    message: (match?.[1] ?? first).slice(0, 2000) || '(no message)',
    code: match?.[2],
    hint: hintLine?.slice('hint: '.length),
  };
}

/** An http(s) URL with no query or fragment; a trailing slash is added so paths resolve under it. */
export function parseCacheUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw firnError('FIRN_E_CONFIG_INVALID', `'${text}' is not a cache URL`, {
      hint: 'write it as http://host:port or https://host/path (--cache or FIRN_CACHE)',
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw firnError('FIRN_E_CONFIG_INVALID', `cache URL '${text}' is not http or https`, {
      hint: 'firn pushes over HTTP; for other stores use nix copy',
    });
  }
  if (url.search !== '' || url.hash !== '') {
    throw firnError('FIRN_E_CONFIG_INVALID', `cache URL '${text}' has a query or fragment`, {
      hint: 'firn takes no store parameters in the URL; use --compression and the other flags',
    });
  }
  if (url.username !== '' || url.password !== '') {
    throw firnError('FIRN_E_CONFIG_INVALID', `cache URL '${text}' holds credentials`, {
      hint: 'pass the token with --token-file, FIRN_TOKEN or netrc, not in the URL',
    });
  }
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

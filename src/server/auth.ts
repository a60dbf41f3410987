/**
 * Who may do what. Uploads need a push token; reads need a read token only on a private cache.
 * The token comes as the Basic-auth password (Nix's netrc) or as a Bearer token.
 */
import type { FastifyRequest } from 'fastify';
import type { CacheIndex, TokenRecord, TokenScope } from '../cache/cache-index.ts';
import { authenticate, scopeAllows, tokenFromAuthorization } from '../cache/tokens.ts';
import { firnError } from '../errors.ts';

export interface AuthPolicy {
  readonly index: CacheIndex;
  readonly privateReads: boolean;
}

const tokens = new WeakMap<FastifyRequest, TokenRecord | undefined>();

/** The token behind a request, once checked; for the access log. */
export function requestToken(request: FastifyRequest): TokenRecord | undefined {
  return tokens.get(request);
}

export async function requireScope(
  policy: AuthPolicy,
  request: FastifyRequest,
  scope: TokenScope,
): Promise<void> {
  if (scope === 'read' && !policy.privateReads) return;
  const presented = tokenFromAuthorization(request.headers.authorization);
  if (presented === undefined) {
    throw firnError(
      'FIRN_E_AUTH_REQUIRED',
      `${request.method} ${request.url} needs a token with ${scope} scope`,
      {
        hint: "put the token in Nix's netrc file as the password for this host, or send 'Authorization: Bearer <token>'",
      },
    );
  }
  const token = await authenticate(policy.index, presented);
  if (token === undefined) {
    throw firnError('FIRN_E_AUTH_REQUIRED', 'the token is not valid (unknown or revoked)', {
      hint: 'create a new one with `firn cache token create --scope push`',
    });
  }
  tokens.set(request, token);
  if (!scopeAllows(token.scope, scope)) {
    throw firnError(
      'FIRN_E_AUTH_FORBIDDEN',
      `token '${token.name}' has ${token.scope} scope; ${request.method} ${request.url} needs ${scope}`,
    );
  }
}

/**
 * The token in an `Authorization` value if it is valid and may read; undefined otherwise. The
 * narinfo fast paths serve a private cache's reads with it and leave every other request to
 * `requireScope` in the routes, which says why (401 or 403).
 */
export async function readToken(
  index: CacheIndex,
  authorization: string | undefined,
): Promise<TokenRecord | undefined> {
  const presented = tokenFromAuthorization(authorization);
  if (presented === undefined) return undefined;
  const token = await authenticate(index, presented);
  return token !== undefined && scopeAllows(token.scope, 'read') ? token : undefined;
}

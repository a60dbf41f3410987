/**
 * Access tokens: random, shown once, stored only as their sha256. A token is sent as the HTTP
 * Basic password (what Nix sends from netrc) or as a Bearer token.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { CacheIndex, TokenRecord, TokenScope } from './cache-index.ts';

export const TOKEN_PREFIX = 'firn_';
const SCOPE_RANK: Readonly<Record<TokenScope, number>> = { read: 1, push: 2, admin: 3 };

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export async function createToken(
  index: CacheIndex,
  name: string,
  scope: TokenScope,
): Promise<{ record: TokenRecord; token: string }> {
  const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  const id = randomBytes(6).toString('hex');
  const createdAt = Date.now();
  await index.createToken({ id, name, scope, secretHash: hashToken(token), createdAt });
  return { record: { id, name, scope, createdAt, lastUsedAt: undefined }, token };
}

export async function authenticate(
  index: CacheIndex,
  presented: string,
): Promise<TokenRecord | undefined> {
  if (presented.length < 8 || presented.length > 512) return undefined;
  return index.findToken(hashToken(presented));
}

/** push implies read, admin implies both. */
export function scopeAllows(granted: TokenScope, needed: TokenScope): boolean {
  return SCOPE_RANK[granted] >= SCOPE_RANK[needed];
}

export function isTokenScope(value: string): value is TokenScope {
  return value === 'read' || value === 'push' || value === 'admin';
}

/** The token from `Authorization: Basic base64(user:token)` or `Authorization: Bearer token`. */
export function tokenFromAuthorization(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const space = header.indexOf(' ');
  if (space < 0) return undefined;
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (scheme === 'bearer') return value === '' ? undefined : value;
  if (scheme !== 'basic') return undefined;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const password = colon < 0 ? '' : decoded.slice(colon + 1);
  return password === '' ? undefined : password;
}

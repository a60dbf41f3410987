/**
 * Which paths a cache lacks. firn serve answers for a whole closure in one request
 * (`POST /api/v1/missing`); any other cache is asked the way Nix asks, one narinfo HEAD per
 * path, many at a time.
 */
import type { CacheClient } from './cache-client.ts';
import { mapLimit } from '../concurrency.ts';

/** firn serve accepts up to 100,000 hash parts per query. */
const BULK_CHUNK = 50_000;
const HEAD_CONCURRENCY = 16;

/**
 * The hash parts of `hashParts` the cache does not hold, in input order, and whether the cache
 * answered in bulk (then it is firn serve, which also takes batches).
 */
export async function askMissing(
  client: CacheClient,
  hashParts: readonly string[],
  signal?: AbortSignal,
): Promise<{ missing: string[]; bulk: boolean }> {
  if (hashParts.length === 0) return { missing: [], bulk: false };
  const missing: string[] = [];
  for (let start = 0; start < hashParts.length; start += BULK_CHUNK) {
    const chunk = hashParts.slice(start, start + BULK_CHUNK);
    const answer = await bulkMissing(client, chunk, signal);
    if (answer === undefined) {
      return { missing: await missingByHead(client, hashParts, signal), bulk: false };
    }
    missing.push(...answer);
  }
  return { missing, bulk: true };
}

/** undefined when the cache has no bulk endpoint (it is not firn). */
async function bulkMissing(
  client: CacheClient,
  hashParts: readonly string[],
  signal?: AbortSignal,
): Promise<string[] | undefined> {
  const spec = {
    method: 'POST',
    path: 'api/v1/missing',
    headers: { 'content-type': 'application/json' },
    body: () => Buffer.from(JSON.stringify({ hashes: hashParts })),
    signal,
  } as const;
  const response = await client.request(spec);
  if (response.status === 404 || response.status === 405) return undefined;
  if (response.status !== 200) throw client.refusal(spec, response);
  const missing = (JSON.parse(response.body.toString('utf8')) as { missing?: unknown }).missing;
  if (!Array.isArray(missing) || !missing.every((item) => typeof item === 'string')) {
    throw client.refusal(spec, {
      status: 200,
      body: Buffer.from('answered without a "missing" list'),
    });
  }
  return missing;
}

/** One `HEAD /<hash>.narinfo` per path: 200 means present, 404 absent. */
export async function missingByHead(
  client: CacheClient,
  hashParts: readonly string[],
  signal?: AbortSignal,
): Promise<string[]> {
  const present = await mapLimit(hashParts, HEAD_CONCURRENCY, async (hashPart) => {
    const spec = { method: 'HEAD', path: `${hashPart}.narinfo`, signal } as const;
    const response = await client.request(spec);
    if (response.status === 200) return true;
    if (response.status === 404 || response.status === 410) return false;
    throw client.refusal(spec, response);
  });
  return hashParts.filter((_, index) => present[index] !== true);
}

/** The hash parts some upstream cache (say cache.nixos.org) already serves. */
export async function presentUpstream(
  upstreams: readonly CacheClient[],
  hashParts: readonly string[],
  signal?: AbortSignal,
): Promise<Set<string>> {
  let remaining = [...hashParts];
  for (const upstream of upstreams) {
    if (remaining.length === 0) break;
    remaining = await missingByHead(upstream, remaining, signal);
  }
  const left = new Set(remaining);
  return new Set(hashParts.filter((hashPart) => !left.has(hashPart)));
}

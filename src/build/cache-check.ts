/**
 * Cache first: one bulk query for which outputs the cache already has. A derivation whose
 * outputs are all there is never built, and neither is anything only it needed; builders
 * substitute those outputs from the cache.
 */
import { firnError } from '../errors.ts';
import { parseStorePath } from '../nix/store-path.ts';
import type { BuildGraph } from './graph.ts';

export interface CacheQuery {
  /** Returns the hash parts (of `hashes`) the cache lacks. */
  missing(hashes: readonly string[]): Promise<ReadonlySet<string>>;
}

/** `POST /api/v1/missing` on a firn cache. */
export function firnCacheQuery(
  cacheUrl: string,
  options: { readonly token?: string | undefined; readonly fetch?: typeof fetch } = {},
): CacheQuery {
  const doFetch = options.fetch ?? fetch;
  return {
    async missing(hashes) {
      if (hashes.length === 0) return new Set();
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (options.token !== undefined) {
        headers.authorization = `Basic ${Buffer.from(`firn:${options.token}`).toString('base64')}`;
      }
      let response: Response;
      try {
        response = await doFetch(`${cacheUrl}/api/v1/missing`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ hashes }),
        });
      } catch (error) {
        throw firnError('FIRN_E_CACHE_UNREACHABLE', `cannot reach the cache at ${cacheUrl}`, {
          cause: error,
          hint: 'check [cache] url in the fleet inventory and that firn serve is running',
        });
      }
      if (!response.ok) {
        throw firnError(
          'FIRN_E_CACHE_UNREACHABLE',
          `the cache at ${cacheUrl} answered the missing-paths query with ${response.status}`,
        );
      }
      const body = (await response.json()) as { missing?: unknown };
      if (!Array.isArray(body.missing)) {
        throw firnError(
          'FIRN_E_CACHE_UNREACHABLE',
          `the cache at ${cacheUrl} sent no "missing" list`,
        );
      }
      return new Set(body.missing.filter((item): item is string => typeof item === 'string'));
    },
  };
}

export interface Pruned {
  /** Derivations to build. */
  readonly toBuild: ReadonlySet<string>;
  /** Derivations reached whose outputs the cache has (not built; substituted). */
  readonly cached: ReadonlySet<string>;
}

/**
 * Asks the cache about every output in the graph at once, then walks from the roots, stopping
 * at derivations the cache has.
 */
export async function pruneCached(
  graph: BuildGraph,
  query: CacheQuery | undefined,
): Promise<Pruned> {
  const hashes = new Set<string>();
  for (const node of graph.nodes.values()) {
    for (const path of node.outputs.values()) if (path !== '') hashes.add(hashOf(path));
  }
  const missing = query === undefined ? hashes : await query.missing([...hashes]);
  const isCached = (drvPath: string): boolean => {
    const node = graph.nodes.get(drvPath);
    if (node === undefined) return false;
    const paths = [...node.outputs.values()];
    return paths.every((path) => path !== '' && !missing.has(hashOf(path)));
  };
  const toBuild = new Set<string>();
  const cached = new Set<string>();
  const stack = [...graph.roots];
  for (let drvPath = stack.pop(); drvPath !== undefined; drvPath = stack.pop()) {
    if (toBuild.has(drvPath) || cached.has(drvPath)) continue;
    if (isCached(drvPath)) {
      cached.add(drvPath);
      continue;
    }
    toBuild.add(drvPath);
    for (const input of graph.nodes.get(drvPath)?.inputDrvs.keys() ?? []) stack.push(input);
  }
  return { toBuild, cached };
}

function hashOf(path: string): string {
  return parseStorePath(path).hashPart;
}

/** For operators and tools: health, Prometheus metrics, JSON stats, and a bulk "which are missing". */
import type { FastifyInstance } from 'fastify';
import { firnError } from '../../errors.ts';
import { formatPublicKey, publicKeyOf } from '../../nix/signing.ts';
import { isValidHashPart } from '../../nix/store-path.ts';
import { requireScope } from '../auth.ts';
import { readBody } from '../body.ts';
import type { ServerContext } from '../context.ts';

const MAX_MISSING_QUERY = 100_000;

export function registerOps(app: FastifyInstance, ctx: ServerContext): void {
  app.get('/healthz', async (_request, reply) => {
    await ctx.cache.index.stats();
    return reply.type('text/plain').send('ok\n');
  });
  app.get('/metrics', async (_request, reply) => {
    return reply.type(ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics());
  });
  app.get('/api/v1/stats', async (request, reply) => {
    await requireScope(ctx.auth, request, 'read');
    const stats = await ctx.cache.index.stats();
    const lookups = await ctx.metrics.narinfoLookups.get();
    const count = (result: string): number =>
      lookups.values.find((value) => value.labels.result === result)?.value ?? 0;
    return reply.send({
      publicKey: formatPublicKey(publicKeyOf(ctx.cache.signingKey)),
      storeDir: ctx.config.storeDir,
      uptimeSeconds: Math.round((Date.now() - ctx.startedAt) / 1000),
      paths: stats.paths,
      nars: stats.nars,
      narBytes: stats.narBytes,
      narSizeTotal: stats.narSizeTotal,
      narinfoHits: count('hit'),
      narinfoMisses: count('miss'),
    });
  });
  // firn push asks once for a whole closure instead of one narinfo HEAD per path.
  app.post('/api/v1/missing', async (request, reply) => {
    await requireScope(ctx.auth, request, 'read');
    const body = await readBody(request.raw, MAX_MISSING_QUERY * 40, 'missing-paths query');
    let hashes: unknown;
    try {
      hashes = (JSON.parse(body.toString('utf8')) as { hashes?: unknown }).hashes;
    } catch {
      hashes = undefined;
    }
    if (
      !Array.isArray(hashes) ||
      hashes.length > MAX_MISSING_QUERY ||
      !hashes.every((h) => typeof h === 'string' && isValidHashPart(h))
    ) {
      throw firnError('FIRN_E_BAD_REQUEST', 'expected {"hashes": [<store path hash parts>]}', {
        hint: `at most ${MAX_MISSING_QUERY} hash parts of 32 nix-base32 characters`,
      });
    }
    return reply.send({ missing: await ctx.cache.index.missing(hashes as string[]) });
  });
}

import type { FastifyInstance } from 'fastify';
import { ingestNarInfo } from '../../cache/narinfo-ingest.ts';
import { firnError } from '../../errors.ts';
import { MAX_NARINFO_BYTES } from '../../nix/narinfo.ts';
import { isValidHashPart } from '../../nix/store-path.ts';
import { requestToken, requireScope } from '../auth.ts';
import { readBody } from '../body.ts';
import type { ServerContext } from '../context.ts';

const LISTING_LIMIT = 64 * 1024 * 1024;

/** `/<hash>.narinfo` and `/<hash>.ls` share the root level of the URL space. */
export function registerNarInfo(app: FastifyInstance, ctx: ServerContext): void {
  app.route<{ Params: { name: string } }>({
    method: ['GET', 'HEAD'],
    url: '/:name',
    handler: async (request, reply) => {
      await requireScope(ctx.auth, request, 'read');
      const { hashPart, kind } = parseRootName(request.params.name);
      if (kind === 'narinfo') {
        const text = await ctx.cache.index.getNarInfo(hashPart);
        ctx.metrics.narinfoLookups.inc({ result: text === undefined ? 'miss' : 'hit' });
        if (text === undefined) throw notFound(`${hashPart}.narinfo`);
        ctx.cache.index.touch(hashPart, Date.now());
        return reply.type('text/x-nix-narinfo').send(text);
      }
      // A listing is served only once its path is in the cache, like everything else.
      const listing =
        (await ctx.cache.index.getNarInfo(hashPart)) === undefined
          ? undefined
          : await ctx.cache.blobs.get(`ls/${hashPart}.ls`);
      if (listing === undefined) throw notFound(`${hashPart}.ls`);
      return reply
        .type('application/json')
        .header('content-length', listing.size)
        .send(listing.body);
    },
  });
  app.put<{ Params: { name: string } }>('/:name', async (request, reply) => {
    await requireScope(ctx.auth, request, 'push');
    const { hashPart, kind } = parseRootName(request.params.name);
    if (kind === 'narinfo') {
      const text = (await readBody(request.raw, MAX_NARINFO_BYTES, 'narinfo')).toString('utf8');
      const result = await ingestNarInfo(
        {
          index: ctx.cache.index,
          signingKey: ctx.cache.signingKey,
          storeDir: ctx.config.storeDir,
          requireReferences: ctx.config.requireReferences,
        },
        { hashPart, text, uploadedBy: requestToken(request)?.name },
      );
      request.log.info(
        { storePath: result.storePath, created: result.created },
        result.created ? 'path added' : 'path already present',
      );
      return reply.code(result.created ? 201 : 200).send();
    }
    const body = await readBody(request.raw, LISTING_LIMIT, 'NAR listing');
    assertJson(body, `${hashPart}.ls`);
    await ctx.cache.blobs.put(`ls/${hashPart}.ls`, [body], { overwrite: true });
    return reply.code(201).send();
  });
}

export function parseRootName(name: string): { hashPart: string; kind: 'narinfo' | 'ls' } {
  const match = /^([^.]+)\.(narinfo|ls)$/.exec(name);
  const hashPart = match?.[1];
  if (hashPart === undefined || !isValidHashPart(hashPart)) throw notFound(name);
  return { hashPart, kind: match?.[2] === 'ls' ? 'ls' : 'narinfo' };
}

export function notFound(what: string): Error {
  return firnError('FIRN_E_NOT_FOUND', `${what} is not in this cache`);
}

export function assertJson(body: Buffer, what: string): void {
  try {
    JSON.parse(body.toString('utf8'));
  } catch {
    throw firnError('FIRN_E_BAD_REQUEST', `${what} is not valid JSON`);
  }
}

import type { FastifyInstance } from 'fastify';
import { ingestNar } from '../../cache/nar-ingest.ts';
import { requireScope } from '../auth.ts';
import type { ServerContext } from '../context.ts';
import { parseRange } from '../range.ts';
import { notFound } from './narinfo.ts';

const NAR_NAME = /^[0-9a-z]{52}\.nar(\.(xz|zst|bz2|gz|br))?$/;

export function registerNar(app: FastifyInstance, ctx: ServerContext): void {
  app.route<{ Params: { file: string } }>({
    method: ['GET', 'HEAD'],
    url: '/nar/:file',
    handler: async (request, reply) => {
      await requireScope(ctx.auth, request, 'read');
      const { file } = request.params;
      if (!NAR_NAME.test(file)) throw notFound(`nar/${file}`);
      const key = `nar/${file}`;
      reply.type('application/x-nix-nar').header('accept-ranges', 'bytes');
      // No Content-Encoding, ever: Nix 2.8 fails on `identity` and aborts on unknown tokens.
      if (request.method === 'HEAD') {
        const info = await ctx.cache.blobs.head(key);
        if (info === undefined) throw notFound(key);
        return reply.header('content-length', info.size).send();
      }
      const head = await ctx.cache.blobs.head(key);
      if (head === undefined) throw notFound(key);
      const range = parseRange(request.headers.range, head.size);
      const blob = await ctx.cache.blobs.get(key, range === undefined ? {} : { range });
      if (blob === undefined) throw notFound(key);
      if (range !== undefined) {
        reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${blob.size}`);
      }
      const length = range === undefined ? blob.size : range.end - range.start + 1;
      return reply.header('content-length', length).send(blob.body);
    },
  });
  app.put<{ Params: { file: string } }>('/nar/:file', async (request, reply) => {
    await requireScope(ctx.auth, request, 'push');
    const abort = new AbortController();
    // A client that goes away mid-upload must leave nothing behind.
    request.raw.once('close', () => {
      if (!request.raw.complete) abort.abort();
    });
    const result = await ingestNar(ctx.cache, {
      fileName: request.params.file,
      body: request.raw,
      signal: abort.signal,
      maxBytes: ctx.config.maxNarSize,
      sizeHint: Number(request.headers['content-length'] ?? Number.NaN) || undefined,
    });
    ctx.metrics.bytesIn.inc(result.record.fileSize);
    request.log.info(
      { nar: result.record.key, narSize: result.record.narSize, created: result.created },
      'NAR stored',
    );
    return reply.code(result.created ? 201 : 200).send();
  });
}

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { BlobFile } from '../../cache/blob-store.ts';
import { ingestNar } from '../../cache/nar-ingest.ts';
import { requireScope } from '../auth.ts';
import type { ServerContext } from '../context.ts';
import { parseRange } from '../range.ts';
import { sendFileRange } from '../send-file.ts';
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
      if (ctx.cache.blobs.openFile !== undefined) {
        const opened = await ctx.cache.blobs.openFile(key);
        if (opened === undefined) throw notFound(key);
        return sendNarFile(request, reply, opened);
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
  /** The body straight from the file through reused buffers; headers as for a stream. */
  const sendNarFile = (
    request: FastifyRequest,
    reply: FastifyReply,
    file: BlobFile,
  ): FastifyReply => {
    let range;
    try {
      range = parseRange(request.headers.range, file.size);
    } catch (error) {
      // The 416 is the answer; a failing close has nothing to add to it.
      file.close().catch(() => undefined);
      throw error;
    }
    if (range !== undefined) {
      reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${file.size}`);
    }
    const start = range?.start ?? 0;
    const length = range === undefined ? file.size : range.end - range.start + 1;
    reply.header('content-length', length);
    // The onResponse hook (access log, metrics) still runs when the raw response finishes.
    reply.hijack();
    for (const [name, value] of Object.entries(reply.getHeaders())) {
      if (value !== undefined) reply.raw.setHeader(name, value);
    }
    reply.raw.writeHead(reply.statusCode);
    sendFileRange(reply.raw, file, start, length).catch((error: unknown) => {
      request.log.error({ err: error }, 'NAR download failed midway');
    });
    return reply;
  };

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

/**
 * Everything else `nix copy` and `nix store copy-log` send: build logs, CA realisations (2.8's
 * `realisations/` and newer Nix's `build-trace-v2/`) and debug-info links. Each is stored as a
 * blob under a validated name and served back; refusing them would make `nix copy` fail after
 * the paths themselves were stored (see ncps#1152).
 */
import type { FastifyInstance } from 'fastify';
import { isValidStorePathName } from '../../nix/store-path.ts';
import { isValidHashPart } from '../../nix/store-path.ts';
import { requireScope } from '../auth.ts';
import { readBody } from '../body.ts';
import type { ServerContext } from '../context.ts';
import { assertJson, notFound } from './narinfo.ts';

interface Kind {
  readonly prefix: string;
  readonly url: string;
  /** The blob key for the request's params, or undefined when the name is not valid. */
  readonly key: (params: Record<string, string>) => string | undefined;
  readonly contentType: string;
  readonly limit: number;
  readonly json: boolean;
}

const OUTPUT_NAME = /^[A-Za-z0-9+._?=-]{1,211}$/;

function drvName(name: string | undefined): string | undefined {
  if (!name?.endsWith('.drv')) return undefined;
  const hashPart = name.slice(0, 32);
  return isValidHashPart(hashPart) && name[32] === '-' && isValidStorePathName(name.slice(33))
    ? name
    : undefined;
}

const KINDS: readonly Kind[] = [
  {
    prefix: 'log',
    url: '/log/:drv',
    key: (params) => (drvName(params.drv) === undefined ? undefined : `log/${params.drv ?? ''}`),
    contentType: 'text/plain; charset=utf-8',
    limit: 256 * 1024 * 1024,
    json: false,
  },
  {
    prefix: 'realisations',
    url: '/realisations/:id',
    key: (params) =>
      /^sha256:[0-9a-f]{64}![A-Za-z0-9+._?=-]{1,211}\.doi$/.test(params.id ?? '')
        ? `realisations/${(params.id ?? '').replace(':', '=')}`
        : undefined,
    contentType: 'application/json',
    limit: 1024 * 1024,
    json: true,
  },
  {
    prefix: 'build-trace-v2',
    url: '/build-trace-v2/:drv/:output',
    key: (params) => {
      const drv = drvName(params.drv);
      const output = params.output ?? '';
      return drv !== undefined && output.endsWith('.doi') && OUTPUT_NAME.test(output)
        ? `build-trace-v2/${drv}!${output}`
        : undefined;
    },
    contentType: 'application/json',
    limit: 1024 * 1024,
    json: true,
  },
  {
    prefix: 'debuginfo',
    url: '/debuginfo/:id',
    key: (params) =>
      /^[0-9a-f]{40}\.debug$/.test(params.id ?? '') ? `debuginfo/${params.id ?? ''}` : undefined,
    contentType: 'application/json',
    limit: 64 * 1024,
    json: true,
  },
];

export function registerExtras(app: FastifyInstance, ctx: ServerContext): void {
  for (const kind of KINDS) {
    app.route<{ Params: Record<string, string> }>({
      method: ['GET', 'HEAD'],
      url: kind.url,
      handler: async (request, reply) => {
        await requireScope(ctx.auth, request, 'read');
        const key = kind.key(request.params);
        const blob = key === undefined ? undefined : await ctx.cache.blobs.get(key);
        if (blob === undefined) throw notFound(request.url.slice(1));
        return reply.type(kind.contentType).header('content-length', blob.size).send(blob.body);
      },
    });
    app.put<{ Params: Record<string, string> }>(kind.url, async (request, reply) => {
      await requireScope(ctx.auth, request, 'push');
      const key = kind.key(request.params);
      if (key === undefined) throw notFound(request.url.slice(1));
      const body = await readBody(request.raw, kind.limit, `${kind.prefix} upload`);
      if (kind.json) assertJson(body, request.url.slice(1));
      await ctx.cache.blobs.put(key, [body], { overwrite: true });
      return reply.code(201).send();
    });
  }
}

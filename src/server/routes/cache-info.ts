import type { FastifyInstance } from 'fastify';
import { requireScope } from '../auth.ts';
import type { ServerContext } from '../context.ts';

export function cacheInfoText(ctx: ServerContext): string {
  return `StoreDir: ${ctx.config.storeDir}\nWantMassQuery: ${ctx.config.wantMassQuery ? 1 : 0}\nPriority: ${ctx.config.priority}\n`;
}

export function registerCacheInfo(app: FastifyInstance, ctx: ServerContext): void {
  const body = cacheInfoText(ctx);
  app.route({
    method: ['GET', 'HEAD'],
    url: '/nix-cache-info',
    handler: async (request, reply) => {
      await requireScope(ctx.auth, request, 'read');
      return reply.type('text/x-nix-cache-info').send(body);
    },
  });
  // Nix PUTs nix-cache-info only when its GET failed; accept it so such a client carries on.
  app.put('/nix-cache-info', async (request, reply) => {
    await requireScope(ctx.auth, request, 'push');
    request.raw.resume();
    return reply.code(204).send();
  });
}

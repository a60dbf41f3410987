import { dispatchSubcommand } from '../args.ts';
import type { CommandContext } from '../context.ts';

export function run(ctx: CommandContext): Promise<number> {
  return dispatchSubcommand(
    ctx,
    {
      usage: 'firn cache COMMAND [--data DIR] …',
      description: 'Manage a firn cache on the cache box: tokens, its public key, gc, verify.',
    },
    {
      token: {
        summary: 'create, list and revoke access tokens',
        run: async (sub) => (await import('./cache-token.ts')).run(sub),
      },
      key: {
        summary: "print the cache's public key for trusted-public-keys",
        run: async (sub) => (await import('./cache-key.ts')).run(sub),
      },
      gc: {
        summary: 'evict least recently used paths by size or age',
        run: async (sub) => (await import('./cache-gc.ts')).run(sub),
      },
      verify: {
        summary: 're-hash every stored NAR and report corruption',
        run: async (sub) => (await import('./cache-verify.ts')).run(sub),
      },
    },
  );
}

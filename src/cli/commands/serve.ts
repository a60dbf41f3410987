import { pino } from 'pino';
import { loadServeConfig } from '../../config/serve-config.ts';
import { formatPublicKey, publicKeyOf } from '../../nix/signing.ts';
import { startServer } from '../../server/start.ts';
import { createLogDestination } from '../../logging.ts';
import { parseCommandArgs, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';

const help: CommandHelp = {
  usage: 'firn serve [--listen HOST:PORT] [--data DIR] [--config FILE] [options]',
  description: [
    'Run the binary cache: any Nix client substitutes from it, `nix copy --to` (with a push token) uploads to it.',
    'Uploads are verified (NarHash, NarSize, FileHash) while they stream and signed with the cache key.',
    'Settings come from flags, then FIRN_* environment variables, then the config file (TOML), then defaults.',
  ].join('\n'),
  options: [
    '--listen HOST:PORT     where to listen (default 127.0.0.1:5000; FIRN_LISTEN)',
    '--data DIR             data directory (default $XDG_STATE_HOME/firn or ~/.local/state/firn; FIRN_DATA)',
    '--config FILE          TOML config file (top-level keys or a [serve] table)',
    '--priority N           nix-cache-info Priority (default 30)',
    '--key-name NAME        signing key name for a new key (default <hostname>-1)',
    '--private              reads need a token with read scope',
    '--allow-missing-references  accept narinfos whose references the cache lacks',
    '--log-level LEVEL      fatal|error|warn|info|debug|trace|silent (default info)',
  ],
  examples: ['firn serve', 'firn serve --listen 0.0.0.0:5000 --data /var/lib/firn'],
};

const options = {
  listen: { type: 'string' },
  data: { type: 'string' },
  config: { type: 'string' },
  priority: { type: 'string' },
  'key-name': { type: 'string' },
  private: { type: 'boolean' },
  'allow-missing-references': { type: 'boolean' },
  'log-level': { type: 'string' },
} as const;

export async function run(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(ctx, help, options, { min: 0, max: 0 });
  if (args === undefined) return 0;
  const { values } = args;
  const config = await loadServeConfig({
    file: values.config ?? ctx.env.FIRN_CONFIG,
    env: ctx.env,
    flags: {
      listen: values.listen,
      data: values.data,
      priority: values.priority,
      'key-name': values['key-name'],
      'log-level': values['log-level'],
      ...(values.private === true ? { private: true } : {}),
      ...(values['allow-missing-references'] === true ? { 'require-references': false } : {}),
    },
  });
  const logger = pino(
    { level: config.logLevel }, // Bounded: when stdout is slower than the requests, log lines are dropped, not buffered forever.
    createLogDestination(1, { maxBytes: 8 * 1024 * 1024 }),
  );
  const server = await startServer(config, logger);
  const publicKey = formatPublicKey(publicKeyOf(server.cache.signingKey));
  ctx.stderr.write(banner(server.url, config.dataDir, publicKey));
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'shutting down: finishing requests in flight');
      server.close().then(resolve, (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        resolve();
      });
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  logger.flush();
  return 0;
}

function banner(url: string, dataDir: string, publicKey: string): string {
  const host = new URL(url).hostname;
  return `firn cache listening on ${url}
  data:       ${dataDir}
  public key: ${publicKey}

On each client, add to nix.conf (or nix.settings on NixOS):
  extra-substituters = ${url}
  extra-trusted-public-keys = ${publicKey}
  narinfo-cache-negative-ttl = 30

To let a machine push, make a token and put it in that machine's netrc file (/etc/nix/netrc):
  firn cache token create --data ${dataDir} --name builder1 --scope push
  machine ${host} login firn password <the token>
then: nix copy --to '${url}?compression=zstd' ./result

`;
}

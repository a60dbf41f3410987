/** Starting and stopping the cache server as a process: open, listen, drain on SIGINT/SIGTERM. */
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { openCache, type Cache } from '../cache/cache.ts';
import { enableGcPacing } from '../cache/gc-pacing.ts';
import type { ServeConfig } from '../config/serve-config.ts';
import { firnError } from '../errors.ts';
import { buildApp } from './app.ts';

export interface RunningServer {
  readonly app: FastifyInstance;
  readonly cache: Cache;
  readonly url: string;
  close(): Promise<void>;
}

export async function startServer(
  config: ServeConfig,
  logger: Logger = pino({ level: config.logLevel }),
): Promise<RunningServer> {
  // Uploads stream GiBs through short-lived buffers: collect them as they go, not in heaps.
  enableGcPacing();
  const cache = await openCache({
    dataDir: config.dataDir,
    keyName: config.keyName,
    storeDir: config.storeDir,
  });
  const report = cache.openReport;
  if (report.keyTightened)
    logger.warn(
      { dataDir: config.dataDir },
      'the secret key was readable by others; its mode is now 0600',
    );
  if (report.tempFilesRemoved + report.orphanBlobsRemoved + report.danglingRowsRemoved > 0) {
    logger.info(report, 'repaired what an earlier run left behind');
  }
  let app: FastifyInstance;
  try {
    app = await buildApp({ cache, config, logger });
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    await cache.close();
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      throw firnError(
        'FIRN_E_CONFIG_INVALID',
        `cannot listen on ${config.host}:${config.port}: ${code}`,
        {
          cause: error,
          hint:
            code === 'EADDRINUSE'
              ? 'another program uses that port; pick another with --listen'
              : 'check --listen',
        },
      );
    }
    throw error;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  let closing: Promise<void> | undefined;
  return {
    app,
    cache,
    url: `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}`,
    close: () => {
      closing ??= (async () => {
        // A connection whose request ends after close() began would sit in keep-alive until
        // keepAliveTimeout (65 s) and hold up the exit: close such connections as they idle.
        // That covers those the raw narinfo path still holds, which node:http does not list:
        // narinfo-connection.ts extends closeIdleConnections to them.
        const sweep = setInterval(() => {
          app.server.closeIdleConnections();
        }, 100);
        try {
          await app.close();
        } finally {
          clearInterval(sweep);
        }
        await cache.close();
      })();
      return closing;
    },
  };
}

/**
 * Everything a push or drain talks to, made from the settings: the cache client with its
 * credentials and retries, the upstream caches, the local store and its path info.
 */
import { firnError } from '../errors.ts';
import type { PushConfig } from '../config/push-config.ts';
import { CacheClient, type RetryEvent } from './cache-client.ts';
import { findCredentials } from './credentials.ts';
import type { NarOptions } from './nar-prepare.ts';
import {
  localStore,
  openPathInfoSource,
  type LocalStore,
  type PathInfoSource,
} from './path-info.ts';

export interface PushSession {
  readonly client: CacheClient;
  readonly upstreams: readonly CacheClient[];
  readonly store: LocalStore;
  readonly source: PathInfoSource;
  readonly nar: Omit<NarOptions, 'tmpDir'>;
  readonly jobs: number;
  readonly batchPaths: number;
  close(): void;
}

export async function openPushSession(options: {
  config: PushConfig;
  env: NodeJS.ProcessEnv;
  tokenFileFlag?: string | undefined;
  onRetry: (event: RetryEvent) => void;
}): Promise<PushSession> {
  const { config, env } = options;
  if (config.cache === undefined || config.cache === '') {
    throw firnError('FIRN_E_CONFIG_INVALID', 'no cache to push to', {
      hint: 'pass --cache URL, set FIRN_CACHE, or set `cache` in the [push] table of the config file',
    });
  }
  const backoff = {
    retries: config.retries,
    baseMs: config.retryDelayMs,
    maxMs: config.retryMaxDelayMs,
  };
  const host = new URL(config.cache).hostname;
  const credentials = await findCredentials({
    tokenFileFlag: options.tokenFileFlag,
    env,
    tokenFileSetting: config.tokenFile,
    netrcFile: config.netrcFile,
    host,
  });
  const client = new CacheClient({
    url: config.cache,
    authorization: credentials.authorization,
    credentialSource: credentials.source,
    backoff,
    maxSockets: config.jobs + 4,
    onRetry: options.onRetry,
  });
  // Upstreams are only read: no credentials, and a short answer is enough.
  const upstreams = config.upstreams.map(
    (url) =>
      new CacheClient({
        url,
        backoff: { ...backoff, retries: Math.min(2, backoff.retries) },
        maxSockets: 16,
        onRetry: options.onRetry,
      }),
  );
  const store = localStore(config.store);
  let source: PathInfoSource;
  try {
    source = await openPathInfoSource({ store, mode: config.pathInfo, env });
  } catch (error) {
    client.close();
    for (const upstream of upstreams) upstream.close();
    throw error;
  }
  return {
    client,
    upstreams,
    store,
    source,
    nar: {
      compression: config.compression,
      level: config.compressionLevel,
      minCompressSize: config.compressMinSize,
    },
    jobs: config.jobs,
    batchPaths: config.batchPaths,
    close() {
      client.close();
      for (const upstream of upstreams) upstream.close();
      source.close();
    },
  };
}

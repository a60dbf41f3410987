import type { Logger } from 'pino';
import type { Cache } from '../cache/cache.ts';
import type { ServeConfig } from '../config/serve-config.ts';
import type { AuthPolicy } from './auth.ts';
import type { ServerMetrics } from './metrics.ts';

/** What every route needs; built once by buildApp. */
export interface ServerContext {
  readonly cache: Cache;
  readonly config: ServeConfig;
  readonly metrics: ServerMetrics;
  readonly auth: AuthPolicy;
  readonly logger: Logger;
  readonly startedAt: number;
}

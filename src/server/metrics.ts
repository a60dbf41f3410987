/** Prometheus metrics of the cache server, on a registry of its own (tests build many servers). */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { CacheIndex } from '../cache/cache-index.ts';

export interface ServerMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'method' | 'status'>;
  readonly bytesIn: Counter;
  readonly bytesOut: Counter;
  readonly narinfoLookups: Counter<'result'>;
  readonly refusedUploads: Counter<'reason'>;
}

export function createMetrics(index: CacheIndex): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'firn_' });
  new Gauge({
    name: 'firn_store_nar_bytes',
    help: 'Bytes of NAR files stored (as compressed on disk)',
    registers: [registry],
    async collect() {
      this.set((await index.stats()).narBytes);
    },
  });
  new Gauge({
    name: 'firn_store_paths',
    help: 'Store paths the cache holds',
    registers: [registry],
    async collect() {
      this.set((await index.stats()).paths);
    },
  });
  return {
    registry,
    requests: new Counter({
      name: 'firn_http_requests_total',
      help: 'HTTP requests by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers: [registry],
    }),
    bytesIn: new Counter({
      name: 'firn_http_bytes_in_total',
      help: 'Request body bytes received',
      registers: [registry],
    }),
    bytesOut: new Counter({
      name: 'firn_http_bytes_out_total',
      help: 'Response body bytes sent',
      registers: [registry],
    }),
    narinfoLookups: new Counter({
      name: 'firn_narinfo_lookups_total',
      help: 'narinfo GET/HEAD lookups by result (hit or miss)',
      labelNames: ['result'],
      registers: [registry],
    }),
    refusedUploads: new Counter({
      name: 'firn_uploads_refused_total',
      help: 'Uploads refused, by error code',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
}

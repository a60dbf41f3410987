/** Prometheus metrics of the cache server, on a registry of its own (tests build many servers). */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { CacheIndex } from '../cache/cache-index.ts';

/** A counter with its labels bound once: no label hashing per increment. */
export interface BoundCounter {
  inc(value?: number): void;
}

export interface ServerMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'method' | 'status'>;
  /** `requests` for one route, method and status, bound once and kept. */
  requestCounter(route: string, method: string, status: number | string): BoundCounter;
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
  const requests = new Counter({
    name: 'firn_http_requests_total',
    help: 'HTTP requests by route, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  });
  // Routes, methods and statuses are few; unmatched URLs all share the route 'unmatched'.
  const bound = new Map<string, BoundCounter>();
  const requestCounter = (route: string, method: string, status: number | string): BoundCounter => {
    const key = `${route} ${method} ${status}`;
    let counter = bound.get(key);
    if (counter === undefined) {
      counter = requests.labels(route, method, String(status));
      bound.set(key, counter);
    }
    return counter;
  };
  return {
    registry,
    requests,
    requestCounter,
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

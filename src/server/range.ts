/** Single `Range: bytes=…` requests, the only kind Nix sends (to resume a download). */
import { firnError } from '../errors.ts';
import type { ByteRange } from '../cache/blob-store.ts';

/**
 * Returns the range to serve, undefined to serve the whole body (no header, or a multi-range
 * request, which RFC 9110 lets a server ignore, or a unit other than bytes, which it must
 * ignore), or throws FIRN_E_RANGE_INVALID (416).
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined || !/^\s*bytes=/i.test(header)) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/i.exec(header.trim());
  if (match === null) {
    if (header.includes(',')) return undefined;
    throw unsatisfiable(header, size);
  }
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') throw unsatisfiable(header, size);
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) throw unsatisfiable(header, size);
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (start >= size || end < start) throw unsatisfiable(header, size);
  return { start, end };
}

function unsatisfiable(header: string, size: number): Error {
  return firnError(
    'FIRN_E_RANGE_INVALID',
    `cannot satisfy Range '${header}' for a ${size}-byte file`,
    {
      details: { size },
    },
  );
}

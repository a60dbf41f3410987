/** Reading small request bodies (narinfo, listings, realisations) with a hard size limit. */
import type { IncomingMessage } from 'node:http';
import { firnError } from '../errors.ts';

export async function readBody(
  request: IncomingMessage,
  limit: number,
  what: string,
): Promise<Buffer> {
  const declared = Number(request.headers['content-length'] ?? NaN);
  if (declared > limit) throw tooLarge(what, limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge(what, limit);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

function tooLarge(what: string, limit: number): Error {
  return firnError('FIRN_E_INPUT_TOO_LARGE', `${what} is larger than ${limit} bytes`);
}

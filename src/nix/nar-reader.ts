/**
 * Streaming NAR parser that trusts nothing: every tag, length, padding byte, name and the order
 * of directory entries is checked, and file contents pass through as views of the input chunks,
 * so memory stays constant whatever the NAR holds.
 *
 * `NarParser` is a synchronous push parser (feed it chunks, get events back), usable inside a
 * Transform or an HTTP body handler; `readNar` wraps it as an async generator over any source
 * of chunks, pulling the next chunk only when the consumer has taken every event of the last.
 *
 * This module is the one path importers use. The parser itself lives in `nar-parser.ts` (the
 * grammar) over `nar-lexer.ts` (the byte level), with its tables in `nar-grammar.ts`, its name
 * rules and their errors in `nar-checks.ts` and its event types in `nar-events.ts`; this file
 * re-exports the parser and the events and holds the convenience readers built on them.
 */
import { NarParser } from './nar-parser.ts';
import type { NarEvent } from './nar-events.ts';

export { NarParser } from './nar-parser.ts';
export type {
  NarContentsEvent,
  NarDirectoryEndEvent,
  NarDirectoryEvent,
  NarEvent,
  NarRegularEvent,
  NarSymlinkEvent,
} from './nar-events.ts';

/** Chunks from streams are Buffers; a plain Uint8Array is wrapped without copying. */
export function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
}

/**
 * Parses the NAR in `source` and yields its events in order. Pulls the next chunk only after
 * the consumer took every event of the last one, so a slow consumer slows the source down.
 * Throws FIRN_E_NAR_… errors; TRUNCATED when the source ends early.
 */
export async function* readNar(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<NarEvent, void, undefined> {
  const parser = new NarParser();
  for await (const chunk of source) {
    yield* parser.push(asBuffer(chunk));
  }
  parser.end();
}

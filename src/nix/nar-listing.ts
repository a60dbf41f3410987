/**
 * Nix's `.ls` listing of a NAR (what `write-nar-listing=1` stores next to a narinfo and
 * `nix store ls --json` reads), built from reader events, plus the `nix store ls -l` text form.
 *
 * Byte-for-byte what Nix 2.8 writes (nar-accessor.cc listNar with its own JSON writer):
 *   {"version":1,"root":NODE}
 *   NODE = {"type":"regular","size":N[,"executable":true],"narOffset":M}
 *        | {"type":"symlink","target":"…"}
 *        | {"type":"directory","entries":{"name":NODE,…}}
 * Entries come in NAR (bytewise) order; strings escape `"`, `\`, \n, \r, \t and other bytes
 * below 0x20 as \u00XX, and every other byte, even invalid UTF-8, is copied as is. So the listing
 * is assembled from bytes: JSON.stringify would reorder numeric keys and re-encode names.
 */
import type { NarEvent } from './nar-reader.ts';
import { readNar } from './nar-reader.ts';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function needsEscape(byte: number): boolean {
  return byte < 0x20 || byte === QUOTE || byte === BACKSLASH;
}

function escapeByte(byte: number): string {
  if (byte === QUOTE) return '\\"';
  if (byte === BACKSLASH) return '\\\\';
  if (byte === 0x0a) return '\\n';
  if (byte === 0x0d) return '\\r';
  if (byte === 0x09) return '\\t';
  return `\\u${byte.toString(16).padStart(4, '0')}`;
}

/**
 * `bytes` as a JSON string literal escaped the way Nix 2.8 does, in latin1 form: one char per
 * byte, so `Buffer.from(result, 'latin1')` gives the exact bytes.
 */
function jsonLatin1(bytes: Buffer): string {
  let plain = true;
  for (const byte of bytes) {
    if (needsEscape(byte)) {
      plain = false;
      break;
    }
  }
  if (plain) return `"${bytes.toString('latin1')}"`;
  let out = '"';
  for (const byte of bytes) out += needsEscape(byte) ? escapeByte(byte) : String.fromCharCode(byte);
  return `${out}"`;
}

/** `bytes` as a JSON string literal, escaped the way Nix 2.8 does. */
export function jsonStringBytes(bytes: Buffer): Buffer {
  return Buffer.from(jsonLatin1(bytes), 'latin1');
}

/**
 * Collects reader events into the `.ls` JSON; memory grows with the number of entries only.
 * The text is kept as a latin1 string (one char per byte) and encoded once at the end.
 */
export class NarListingBuilder {
  #out = '';
  /** Per open directory: whether an entry was written yet (a comma goes before the next). */
  readonly #hasEntries: boolean[] = [];
  #rootSeen = false;
  #rootClosed = false;

  add(event: NarEvent): void {
    if (event.type === 'contents') return;
    if (event.type === 'directory-end') {
      this.#hasEntries.pop();
      this.#out += '}}';
      if (this.#hasEntries.length === 0) this.#rootClosed = true;
      return;
    }
    if (event.depth === 0) {
      this.#rootSeen = true;
      this.#out += '{"version":1,"root":';
    } else {
      const last = this.#hasEntries.length - 1;
      this.#out +=
        this.#hasEntries[last] === true
          ? `,${jsonLatin1(event.name)}:`
          : `${jsonLatin1(event.name)}:`;
      this.#hasEntries[last] = true;
    }
    switch (event.type) {
      case 'directory':
        this.#out += '{"type":"directory","entries":{';
        this.#hasEntries.push(false);
        return;
      case 'regular':
        this.#out += `{"type":"regular","size":${event.size}${event.executable ? ',"executable":true' : ''},"narOffset":${event.contentsOffset}}`;
        break;
      case 'symlink':
        this.#out += `{"type":"symlink","target":${jsonLatin1(event.target)}}`;
        break;
    }
    if (event.depth === 0) this.#rootClosed = true;
  }

  /** The listing; the events must have covered a whole NAR. */
  finish(): Buffer {
    if (!this.#rootSeen || !this.#rootClosed) {
      throw new Error('NarListingBuilder.finish called before the NAR was complete');
    }
    return Buffer.from(`${this.#out}}`, 'latin1');
  }
}

/** The `.ls` listing of the NAR in `source` (which the reader validates on the way). */
export async function narListing(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): Promise<Buffer> {
  const builder = new NarListingBuilder();
  for await (const event of readNar(source)) builder.add(event);
  return builder.finish();
}

/**
 * One line of `nix store ls -lR` for a node event (undefined for other events):
 * `-r-xr-xr-x                   18 ./bin/hi`, with ` -> target` after symlinks. The root is
 * shown as `.`. Bytes, since names need not be UTF-8.
 */
export function formatListingLine(event: NarEvent): Buffer | undefined {
  let mode: string;
  let size = 0;
  switch (event.type) {
    case 'directory':
      mode = 'dr-xr-xr-x';
      break;
    case 'regular':
      mode = event.executable ? '-r-xr-xr-x' : '-r--r--r--';
      size = event.size;
      break;
    case 'symlink':
      mode = 'lrwxrwxrwx';
      break;
    default:
      return undefined;
  }
  const parts = [
    Buffer.from(`${mode} ${String(size).padStart(20)} ${event.path.length === 0 ? '.' : './'}`),
    event.path,
  ];
  if (event.type === 'symlink') parts.push(Buffer.from(' -> '), event.target);
  parts.push(Buffer.from('\n'));
  return Buffer.concat(parts);
}

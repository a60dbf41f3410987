/**
 * Streaming NAR parser that trusts nothing: every tag, length, padding byte, name and the order
 * of directory entries is checked, and file contents pass through as views of the input chunks,
 * so memory stays constant whatever the NAR holds.
 *
 * `NarParser` is a synchronous push parser (feed it chunks, get events back), usable inside a
 * Transform or an HTTP body handler; `readNar` wraps it as an async generator over any source
 * of chunks, pulling the next chunk only when the consumer has taken every event of the last.
 */
import { FirnError, firnError, type ErrorCode } from '../errors.ts';
import { NAR_LIMITS, NAR_MAGIC, displayNarPath, encodeStrings, padLength } from './nar-format.ts';

interface NodeInfo {
  /** Path inside the NAR, names joined by '/'; empty for the root. */
  readonly path: Buffer;
  /** Entry name in its directory; empty for the root. */
  readonly name: Buffer;
  /** 0 for the root. */
  readonly depth: number;
  /** Byte offset of the node's "(" token. */
  readonly offset: number;
}

export interface NarDirectoryEvent extends NodeInfo {
  readonly type: 'directory';
}

/** After the last entry of the directory at `path`. */
export interface NarDirectoryEndEvent {
  readonly type: 'directory-end';
  readonly path: Buffer;
  readonly depth: number;
}

/** A regular file; `contents` events carrying exactly `size` bytes follow it at once. */
export interface NarRegularEvent extends NodeInfo {
  readonly type: 'regular';
  readonly executable: boolean;
  readonly size: number;
  /** Byte offset of the first content byte (the `narOffset` of `.ls` listings). */
  readonly contentsOffset: number;
}

/** A piece of the current file. `data` is a view of an input chunk: use it before going on. */
export interface NarContentsEvent {
  readonly type: 'contents';
  readonly data: Buffer;
}

export interface NarSymlinkEvent extends NodeInfo {
  readonly type: 'symlink';
  readonly target: Buffer;
}

export type NarEvent =
  NarDirectoryEvent | NarDirectoryEndEvent | NarRegularEvent | NarContentsEvent | NarSymlinkEvent;

/** Where the grammar stands; each state names the token it expects next. */
const S = {
  magic: 0,
  open: 1, // "(" of a node
  typeTag: 2, // "type"
  type: 3, // "regular" | "symlink" | "directory"
  executableOrContents: 4,
  executableValue: 5, // ""
  contentsTag: 6,
  contentsLength: 7,
  contents: 8,
  contentsPadding: 9,
  close: 10, // ")" of a regular or symlink node
  targetTag: 11,
  target: 12,
  entryOrClose: 13, // "entry" | ")" in a directory
  entryOpen: 14,
  nameTag: 15,
  name: 16,
  nodeTag: 17,
  entryClose: 18,
  done: 19,
} as const;
type State = (typeof S)[keyof typeof S];

const MAGIC = encodeStrings(NAR_MAGIC);
const TAG_LIMIT = 16; // longer than any tag; a longer string is refused before it is read

/** A tag's bytes, and its whole encoded token (length, bytes, padding) for a quick compare. */
interface Tag {
  readonly text: Buffer;
  readonly token: Buffer;
}
function tag(text: string): Tag {
  return { text: Buffer.from(text, 'latin1'), token: encodeStrings(text) };
}
const T = {
  open: tag('('),
  close: tag(')'),
  type: tag('type'),
  regular: tag('regular'),
  symlink: tag('symlink'),
  directory: tag('directory'),
  executable: tag('executable'),
  contents: tag('contents'),
  target: tag('target'),
  entry: tag('entry'),
  name: tag('name'),
  node: tag('node'),
  empty: tag(''),
} as const;

const SLASH = 0x2f;
const EMPTY = Buffer.alloc(0);

interface Frame {
  readonly path: Buffer;
  readonly depth: number;
  previous: Buffer | undefined;
}

/** Longest string kept whole (a symlink target and its length and padding). */
const SCRATCH_SIZE = 8 + NAR_LIMITS.target + 8;

export class NarParser {
  #state: State = S.magic;
  #failed: FirnError | undefined;
  // Input: the current chunk, read position, and the absolute offset of chunk[0].
  #chunk: Buffer = EMPTY;
  #pos = 0;
  #base = 0;
  // A token that straddles chunks is gathered here; its length is at most SCRATCH_SIZE.
  readonly #scratch = Buffer.allocUnsafe(SCRATCH_SIZE);
  #scratchLength = 0;
  // The string being read: its length once its header was read, else -1; where it started.
  #stringLength = -1;
  #stringOffset = 0;
  // Result of the last complete take(): bytes at #tokenAt in #tokenBuffer.
  #tokenBuffer: Buffer = EMPTY;
  #tokenAt = 0;
  #tokenLength = 0;
  /** Offset of the first byte of the last take(). */
  #takeOffset = 0;
  // Tree position.
  readonly #stack: Frame[] = [];
  #nodeOffset = 0;
  #childName: Buffer = EMPTY;
  #childPath: Buffer = EMPTY;
  #executable = false;
  #size = 0;
  #remaining = 0;
  #events: NarEvent[] = [];

  /** Bytes consumed so far. */
  get offset(): number {
    return this.#base + this.#pos;
  }

  /** True once the root object is complete. */
  get done(): boolean {
    return this.#state === S.done;
  }

  /**
   * Parses `chunk` and returns the events it completes. `contents` events are views of
   * `chunk`. Throws a FirnError (FIRN_E_NAR_…) at the first fault, and again on later calls.
   */
  push(chunk: Buffer): NarEvent[] {
    if (this.#failed !== undefined) throw this.#failed;
    this.#chunk = chunk;
    this.#pos = 0;
    this.#events = [];
    try {
      while (this.#pos < chunk.length && this.#step()) {
        // #step consumed a token or some contents
      }
    } catch (error) {
      if (error instanceof FirnError) this.#failed = error;
      throw error;
    } finally {
      this.#base += chunk.length;
      this.#pos = 0;
      this.#chunk = EMPTY;
    }
    return this.#events;
  }

  /** Declares the end of input; throws FIRN_E_NAR_TRUNCATED unless the root object is whole. */
  end(): void {
    if (this.#failed !== undefined) throw this.#failed;
    if (this.#state !== S.done) {
      this.#failed = this.#error(
        'FIRN_E_NAR_TRUNCATED',
        `the NAR ends after ${this.#base} bytes, inside ${this.#where()}`,
        this.#base,
      );
      throw this.#failed;
    }
  }

  /** Advances by one token (or a run of contents); false when more input is needed. */
  #step(): boolean {
    switch (this.#state) {
      case S.magic:
        return this.#magic();
      case S.open:
        return this.#expect(T.open, S.typeTag);
      case S.typeTag:
        return this.#expect(T.type, S.type);
      case S.type:
        return this.#nodeType();
      case S.executableOrContents: {
        if (this.#match(T.contents)) this.#state = S.contentsLength;
        else if (this.#match(T.executable)) this.#state = S.executableValue;
        else if (!this.#tag()) return false;
        else if (this.#tokenIs(T.executable.text)) this.#state = S.executableValue;
        else if (this.#tokenIs(T.contents.text)) this.#state = S.contentsLength;
        else throw this.#unexpected('"executable" or "contents"');
        return true;
      }
      case S.executableValue: {
        if (!this.#expect(T.empty, S.contentsTag)) return false;
        this.#executable = true;
        return true;
      }
      case S.contentsTag:
        return this.#expect(T.contents, S.contentsLength);
      case S.contentsLength:
        return this.#contentsLength();
      case S.contents:
        this.#contents();
        return true;
      case S.contentsPadding:
        return this.#contentsPadding();
      case S.close: {
        if (!this.#expect(T.close, S.close)) return false;
        this.#afterNode();
        return true;
      }
      case S.targetTag:
        return this.#expect(T.target, S.target);
      case S.target:
        return this.#target();
      case S.entryOrClose:
        return this.#entryOrClose();
      case S.entryOpen:
        return this.#expect(T.open, S.nameTag);
      case S.nameTag:
        return this.#expect(T.name, S.name);
      case S.name:
        return this.#name();
      case S.nodeTag: {
        if (!this.#expect(T.node, S.open)) return false;
        this.#nodeOffset = this.offset;
        return true;
      }
      case S.entryClose: {
        if (!this.#expect(T.close, S.entryOrClose)) return false;
        return true;
      }
      case S.done:
        throw this.#error(
          'FIRN_E_NAR_TRAILING_DATA',
          `${this.#chunk.length - this.#pos} or more bytes follow the end of the NAR`,
          this.offset,
        );
    }
  }

  /** Compares the first bytes with the magic as they arrive, so garbage fails at once. */
  #magic(): boolean {
    const at = this.offset;
    const n = Math.min(MAGIC.length - at, this.#chunk.length - this.#pos);
    for (let i = 0; i < n; i++) {
      if (this.#chunk[this.#pos + i] !== MAGIC[at + i]) {
        throw this.#error(
          'FIRN_E_NAR_BAD_MAGIC',
          'the input does not start with the NAR magic "nix-archive-1"',
          at + i,
        );
      }
    }
    this.#pos += n;
    if (at + n < MAGIC.length) return false;
    this.#nodeOffset = this.offset;
    this.#state = S.open;
    return true;
  }

  #nodeType(): boolean {
    let type: Tag;
    if (this.#match(T.regular)) type = T.regular;
    else if (this.#match(T.directory)) type = T.directory;
    else if (this.#match(T.symlink)) type = T.symlink;
    else if (!this.#tag()) return false;
    else if (this.#tokenIs(T.regular.text)) type = T.regular;
    else if (this.#tokenIs(T.directory.text)) type = T.directory;
    else if (this.#tokenIs(T.symlink.text)) type = T.symlink;
    else throw this.#unexpected('"regular", "symlink" or "directory"');
    if (type === T.regular) {
      this.#executable = false;
      this.#state = S.executableOrContents;
    } else if (type === T.symlink) {
      this.#state = S.targetTag;
    } else {
      const depth = this.#stack.length;
      this.#stack.push({ path: this.#childPath, depth, previous: undefined });
      this.#events.push({
        type: 'directory',
        path: this.#childPath,
        name: this.#childName,
        depth,
        offset: this.#nodeOffset,
      });
      this.#state = S.entryOrClose;
    }
    return true;
  }

  #contentsLength(): boolean {
    if (!this.#take(8)) return false;
    const at = this.#takeOffset;
    const size = this.#u64();
    if (size > NAR_LIMITS.contents) {
      throw this.#error(
        'FIRN_E_NAR_LIMIT',
        `file ${displayNarPath(this.#childPath)} claims ${formatSize(size)} bytes, more than the limit of 2^53 - 1`,
        at,
      );
    }
    this.#size = size;
    this.#remaining = size;
    this.#events.push({
      type: 'regular',
      path: this.#childPath,
      name: this.#childName,
      depth: this.#stack.length,
      offset: this.#nodeOffset,
      executable: this.#executable,
      size,
      contentsOffset: this.offset,
    });
    this.#state = size === 0 ? S.contentsPadding : S.contents;
    return true;
  }

  #contents(): void {
    const n = Math.min(this.#remaining, this.#chunk.length - this.#pos);
    this.#events.push({ type: 'contents', data: this.#chunk.subarray(this.#pos, this.#pos + n) });
    this.#pos += n;
    this.#remaining -= n;
    if (this.#remaining === 0) this.#state = S.contentsPadding;
  }

  #contentsPadding(): boolean {
    const length = padLength(this.#size);
    if (!this.#take(length)) return false;
    this.#checkZero(this.#tokenBuffer, this.#tokenAt, length, this.#takeOffset);
    this.#state = S.close;
    return true;
  }

  #target(): boolean {
    if (!this.#string(NAR_LIMITS.target, 'FIRN_E_NAR_LIMIT', 'symlink target')) return false;
    const target = this.#copyToken();
    if (target.length === 0 || target.includes(0)) {
      throw this.#error(
        'FIRN_E_NAR_BAD_NAME',
        `symlink ${displayNarPath(this.#childPath)} has ${target.length === 0 ? 'an empty target' : 'a target containing NUL'}, which no file system can hold`,
        this.#stringOffset,
      );
    }
    this.#events.push({
      type: 'symlink',
      path: this.#childPath,
      name: this.#childName,
      depth: this.#stack.length,
      offset: this.#nodeOffset,
      target,
    });
    this.#state = S.close;
    return true;
  }

  #entryOrClose(): boolean {
    let entry: boolean;
    if (this.#match(T.entry)) entry = true;
    else if (this.#match(T.close)) entry = false;
    else if (!this.#tag()) return false;
    else if (this.#tokenIs(T.entry.text)) entry = true;
    else if (this.#tokenIs(T.close.text)) entry = false;
    else throw this.#unexpected('"entry" or ")"');
    if (entry) {
      this.#state = S.entryOpen;
      return true;
    }
    const frame = this.#stack.pop();
    if (frame !== undefined) {
      this.#events.push({ type: 'directory-end', path: frame.path, depth: frame.depth });
    }
    this.#afterNode();
    return true;
  }

  #name(): boolean {
    if (!this.#string(NAR_LIMITS.name, 'FIRN_E_NAR_LIMIT', 'entry name')) return false;
    const at = this.#stringOffset;
    const frame = this.#stack.at(-1);
    if (frame === undefined) throw new Error('NAR parser: entry name outside a directory');
    const name = this.#copyToken();
    if (!isValidName(name)) {
      throw this.#error(
        'FIRN_E_NAR_BAD_NAME',
        `entry ${JSON.stringify(name.toString('utf8'))} in ${displayNarPath(frame.path)}: names must not be empty, ".", ".." or contain "/" or NUL`,
        at,
      );
    }
    if (frame.previous !== undefined && Buffer.compare(frame.previous, name) >= 0) {
      const same = frame.previous.equals(name);
      throw this.#error(
        'FIRN_E_NAR_UNSORTED',
        `entry ${JSON.stringify(name.toString('utf8'))} in ${displayNarPath(frame.path)} ${same ? 'appears twice' : `comes after ${JSON.stringify(frame.previous.toString('utf8'))}; entries must be sorted bytewise`}`,
        at,
      );
    }
    if (frame.depth + 1 > NAR_LIMITS.depth) {
      throw this.#error(
        'FIRN_E_NAR_LIMIT',
        `directories are nested more than ${NAR_LIMITS.depth} deep at ${displayNarPath(frame.path)}`,
        at,
      );
    }
    frame.previous = name;
    this.#childName = name;
    this.#childPath = frame.path.length === 0 ? name : joinPath(frame.path, name);
    this.#state = S.nodeTag;
    return true;
  }

  /** The node just closed; go back to its directory, or finish at the root. */
  #afterNode(): void {
    this.#state = this.#stack.length === 0 ? S.done : S.entryClose;
  }

  // ── lexer ─────────────────────────────────────────────────────────────────

  /** Reads a tag (a short string) into the token; false when more input is needed. */
  #tag(): boolean {
    return this.#string(TAG_LIMIT, 'FIRN_E_NAR_UNEXPECTED_TOKEN');
  }

  /** Reads the tag `expected` and moves to `next`. */
  #expect(expected: Tag, next: State): boolean {
    if (!this.#match(expected)) {
      if (!this.#tag()) return false;
      if (!this.#tokenIs(expected.text)) {
        throw this.#unexpected(`"${expected.text.toString('latin1')}"`);
      }
    }
    this.#state = next;
    return true;
  }

  /**
   * The fast path: when the whole encoded `tag` is next in the chunk, consumes it. Otherwise
   * (split across chunks, or something else) the caller goes the general way.
   */
  #match(tag: Tag): boolean {
    const token = tag.token;
    const chunk = this.#chunk;
    const pos = this.#pos;
    if (this.#scratchLength !== 0 || this.#stringLength >= 0 || chunk.length - pos < token.length) {
      return false;
    }
    for (let i = 0; i < token.length; i++) {
      if (chunk[pos + i] !== token[i]) return false;
    }
    this.#pos = pos + token.length;
    return true;
  }

  /**
   * Reads a whole string of at most `limit` bytes; a longer length fails with `code` before
   * any of its bytes are read. On success the bytes are at #tokenBuffer[#tokenAt…].
   */
  #string(limit: number, code: ErrorCode, what = 'tag'): boolean {
    if (this.#stringLength < 0) {
      if (!this.#take(8)) return false;
      const at = this.#takeOffset;
      const length = this.#u64();
      if (length > limit) {
        throw this.#error(
          code,
          code === 'FIRN_E_NAR_LIMIT'
            ? `${what} of ${formatSize(length)} bytes in ${this.#where()} exceeds the limit of ${limit}`
            : `expected ${this.#expectation()} but found a string of ${formatSize(length)} bytes`,
          at,
        );
      }
      this.#stringLength = length;
      this.#stringOffset = at;
    }
    const length = this.#stringLength;
    const padded = length + padLength(length);
    if (!this.#take(padded)) return false;
    this.#checkZero(
      this.#tokenBuffer,
      this.#tokenAt + length,
      padded - length,
      this.#takeOffset + length,
    );
    this.#stringLength = -1;
    this.#tokenLength = length;
    return true;
  }

  /**
   * Makes `count` contiguous bytes available at #tokenBuffer[#tokenAt…] and consumes them;
   * false (keeping what arrived so far) when the chunk ends first.
   */
  #take(count: number): boolean {
    if (this.#scratchLength === 0) this.#takeOffset = this.offset;
    const available = this.#chunk.length - this.#pos;
    if (this.#scratchLength === 0 && available >= count) {
      this.#tokenBuffer = this.#chunk;
      this.#tokenAt = this.#pos;
      this.#pos += count;
      return true;
    }
    const n = Math.min(count - this.#scratchLength, available);
    this.#chunk.copy(this.#scratch, this.#scratchLength, this.#pos, this.#pos + n);
    this.#scratchLength += n;
    this.#pos += n;
    if (this.#scratchLength < count) return false;
    this.#scratchLength = 0;
    this.#tokenBuffer = this.#scratch;
    this.#tokenAt = 0;
    return true;
  }

  /** The u64 just taken, as a number; lengths beyond 2^53 come out as Infinity. */
  #u64(): number {
    const b = this.#tokenBuffer;
    const at = this.#tokenAt;
    const low =
      ((b[at] ?? 0) | ((b[at + 1] ?? 0) << 8) | ((b[at + 2] ?? 0) << 16)) +
      (b[at + 3] ?? 0) * 0x100_0000;
    const high =
      ((b[at + 4] ?? 0) | ((b[at + 5] ?? 0) << 8) | ((b[at + 6] ?? 0) << 16)) +
      (b[at + 7] ?? 0) * 0x100_0000;
    return high >= 0x20_0000 ? Infinity : high * 0x1_0000_0000 + low;
  }

  #tokenIs(expected: Buffer): boolean {
    if (this.#tokenLength !== expected.length) return false;
    const buffer = this.#tokenBuffer;
    const at = this.#tokenAt;
    for (let i = 0; i < expected.length; i++) {
      if (buffer[at + i] !== expected[i]) return false;
    }
    return true;
  }

  #copyToken(): Buffer {
    const copy = Buffer.allocUnsafe(this.#tokenLength);
    this.#tokenBuffer.copy(copy, 0, this.#tokenAt, this.#tokenAt + this.#tokenLength);
    return copy;
  }

  #checkZero(buffer: Buffer, at: number, length: number, offset: number): void {
    for (let i = 0; i < length; i++) {
      if (buffer[at + i] !== 0) {
        throw this.#error(
          'FIRN_E_NAR_BAD_PADDING',
          `padding byte ${i} is 0x${(buffer[at + i] ?? 0).toString(16).padStart(2, '0')}, not zero`,
          offset + i,
        );
      }
    }
  }

  // ── errors ────────────────────────────────────────────────────────────────

  #expectation(): string {
    switch (this.#state) {
      case S.magic:
        return '"nix-archive-1"';
      case S.open:
      case S.entryOpen:
        return '"("';
      case S.typeTag:
        return '"type"';
      case S.type:
        return '"regular", "symlink" or "directory"';
      case S.executableOrContents:
        return '"executable" or "contents"';
      case S.executableValue:
        return '"" (the executable marker)';
      case S.contentsTag:
        return '"contents"';
      case S.targetTag:
        return '"target"';
      case S.entryOrClose:
        return '"entry" or ")"';
      case S.nameTag:
        return '"name"';
      case S.nodeTag:
        return '"node"';
      default:
        return '")"';
    }
  }

  #unexpected(expected: string): FirnError {
    const found = this.#tokenBuffer.subarray(this.#tokenAt, this.#tokenAt + this.#tokenLength);
    return this.#error(
      'FIRN_E_NAR_UNEXPECTED_TOKEN',
      `expected ${expected} in ${this.#where()} but found ${JSON.stringify(found.toString('latin1'))}`,
      this.#stringOffset,
    );
  }

  /** The node being parsed, for messages. */
  #where(): string {
    if (this.#state === S.magic) return 'the NAR header';
    const inDirectory =
      this.#state === S.entryOrClose ||
      this.#state === S.entryOpen ||
      this.#state === S.nameTag ||
      this.#state === S.name ||
      this.#state === S.entryClose;
    const path = inDirectory ? (this.#stack.at(-1)?.path ?? EMPTY) : this.#childPath;
    return `the node at ${displayNarPath(path)}`;
  }

  #error(code: ErrorCode, message: string, offset: number): FirnError {
    return firnError(code, `${message} (at byte ${offset})`, { details: { offset } });
  }
}

/** `dir/name` in one allocation (Buffer.concat is slow for small pieces). */
function joinPath(dir: Buffer, name: Buffer): Buffer {
  const path = Buffer.allocUnsafe(dir.length + 1 + name.length);
  dir.copy(path, 0);
  path[dir.length] = SLASH;
  name.copy(path, dir.length + 1);
  return path;
}

/** Nix refuses these names on restore; they could also step out of the destination. */
function isValidName(name: Buffer): boolean {
  if (name.length === 0 || name.includes(SLASH) || name.includes(0)) return false;
  if (name[0] !== 0x2e) return true;
  return !(name.length === 1 || (name.length === 2 && name[1] === 0x2e));
}

function formatSize(size: number): string {
  return Number.isFinite(size) ? String(size) : 'more than 2^53';
}

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

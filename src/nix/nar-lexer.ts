/**
 * The byte level of the NAR parser: reads length-prefixed, zero-padded strings and u64s out of
 * arbitrary chunks (gathering a token that straddles chunks in a fixed scratch buffer) and
 * checks every padding byte. It is the base class of `NarParser` (`nar-parser.ts`), which holds
 * the grammar.
 *
 * Inheritance rather than a separate lexer object, and protected fields rather than accessors
 * for the input position and the last token, keep the parser's hot path exactly as it was in
 * one class: no extra object, call or allocation per chunk or per token.
 */
import { FirnError, firnError, type ErrorCode } from '../errors.ts';
import { NAR_LIMITS, NAR_MAGIC, encodeStrings, padLength } from './nar-format.ts';

const MAGIC = encodeStrings(NAR_MAGIC);
const TAG_LIMIT = 16; // longer than any tag; a longer string is refused before it is read
const EMPTY = Buffer.alloc(0);

/** A tag's bytes, and its whole encoded token (length, bytes, padding) for a quick compare. */
export interface Tag {
  readonly text: Buffer;
  readonly token: Buffer;
}

/** Longest string kept whole (a symlink target and its length and padding). */
const SCRATCH_SIZE = 8 + NAR_LIMITS.target + 8;

export abstract class NarLexer {
  /** The first fault; every later call throws it again. */
  protected failed: FirnError | undefined;
  // Input: the current chunk, read position, and the absolute offset of chunk[0].
  protected chunk: Buffer = EMPTY;
  protected pos = 0;
  protected base = 0;
  // A token that straddles chunks is gathered here; its length is at most SCRATCH_SIZE.
  readonly #scratch = Buffer.allocUnsafe(SCRATCH_SIZE);
  #scratchLength = 0;
  // The string being read: its length once its header was read, else -1; where it started.
  #stringLength = -1;
  protected stringOffset = 0;
  // Result of the last complete take(): bytes at tokenAt in tokenBuffer.
  protected tokenBuffer: Buffer = EMPTY;
  protected tokenAt = 0;
  #tokenLength = 0;
  /** Offset of the first byte of the last take(). */
  protected takeOffset = 0;

  /** The node being parsed, for messages. */
  protected abstract where(): string;
  /** The token the grammar expects next, for messages. */
  protected abstract expectation(): string;

  /** Bytes consumed so far. */
  get offset(): number {
    return this.base + this.pos;
  }

  /** The input ended; throws FIRN_E_NAR_TRUNCATED unless `complete`, or the earlier fault. */
  protected finish(complete: boolean): void {
    if (this.failed !== undefined) throw this.failed;
    if (!complete) {
      this.failed = narError(
        'FIRN_E_NAR_TRUNCATED',
        `the NAR ends after ${this.base} bytes, inside ${this.where()}`,
        this.base,
      );
      throw this.failed;
    }
  }

  /**
   * Compares the first bytes with the magic as they arrive, so garbage fails at once; true once
   * the whole magic was read.
   */
  protected magic(): boolean {
    const at = this.offset;
    const n = Math.min(MAGIC.length - at, this.chunk.length - this.pos);
    for (let i = 0; i < n; i++) {
      if (this.chunk[this.pos + i] !== MAGIC[at + i]) {
        throw narError(
          'FIRN_E_NAR_BAD_MAGIC',
          'the input does not start with the NAR magic "nix-archive-1"',
          at + i,
        );
      }
    }
    this.pos += n;
    return at + n >= MAGIC.length;
  }

  /** Reads a tag (a short string) into the token; false when more input is needed. */
  protected tag(): boolean {
    return this.string(TAG_LIMIT, 'FIRN_E_NAR_UNEXPECTED_TOKEN');
  }

  /**
   * The fast path: when the whole encoded `tag` is next in the chunk, consumes it. Otherwise
   * (split across chunks, or something else) the caller goes the general way.
   */
  protected match(tag: Tag): boolean {
    const token = tag.token;
    const chunk = this.chunk;
    const pos = this.pos;
    if (this.#scratchLength !== 0 || this.#stringLength >= 0 || chunk.length - pos < token.length) {
      return false;
    }
    for (let i = 0; i < token.length; i++) {
      if (chunk[pos + i] !== token[i]) return false;
    }
    this.pos = pos + token.length;
    return true;
  }

  /**
   * Reads a whole string of at most `limit` bytes; a longer length fails with `code` before
   * any of its bytes are read. On success the bytes are at tokenBuffer[tokenAt…].
   */
  protected string(limit: number, code: ErrorCode, what = 'tag'): boolean {
    if (this.#stringLength < 0) {
      if (!this.take(8)) return false;
      const at = this.takeOffset;
      const length = this.u64();
      if (length > limit) {
        throw narError(
          code,
          code === 'FIRN_E_NAR_LIMIT'
            ? `${what} of ${formatSize(length)} bytes in ${this.where()} exceeds the limit of ${limit}`
            : `expected ${this.expectation()} but found a string of ${formatSize(length)} bytes`,
          at,
        );
      }
      this.#stringLength = length;
      this.stringOffset = at;
    }
    const length = this.#stringLength;
    const padded = length + padLength(length);
    if (!this.take(padded)) return false;
    this.checkZero(
      this.tokenBuffer,
      this.tokenAt + length,
      padded - length,
      this.takeOffset + length,
    );
    this.#stringLength = -1;
    this.#tokenLength = length;
    return true;
  }

  /**
   * Makes `count` contiguous bytes available at tokenBuffer[tokenAt…] and consumes them;
   * false (keeping what arrived so far) when the chunk ends first.
   */
  protected take(count: number): boolean {
    if (this.#scratchLength === 0) this.takeOffset = this.offset;
    const available = this.chunk.length - this.pos;
    if (this.#scratchLength === 0 && available >= count) {
      this.tokenBuffer = this.chunk;
      this.tokenAt = this.pos;
      this.pos += count;
      return true;
    }
    const n = Math.min(count - this.#scratchLength, available);
    this.chunk.copy(this.#scratch, this.#scratchLength, this.pos, this.pos + n);
    this.#scratchLength += n;
    this.pos += n;
    if (this.#scratchLength < count) return false;
    this.#scratchLength = 0;
    this.tokenBuffer = this.#scratch;
    this.tokenAt = 0;
    return true;
  }

  /** The u64 just taken, as a number; lengths beyond 2^53 come out as Infinity. */
  protected u64(): number {
    const b = this.tokenBuffer;
    const at = this.tokenAt;
    const low =
      ((b[at] ?? 0) | ((b[at + 1] ?? 0) << 8) | ((b[at + 2] ?? 0) << 16)) +
      (b[at + 3] ?? 0) * 0x100_0000;
    const high =
      ((b[at + 4] ?? 0) | ((b[at + 5] ?? 0) << 8) | ((b[at + 6] ?? 0) << 16)) +
      (b[at + 7] ?? 0) * 0x100_0000;
    return high >= 0x20_0000 ? Infinity : high * 0x1_0000_0000 + low;
  }

  protected tokenIs(expected: Buffer): boolean {
    if (this.#tokenLength !== expected.length) return false;
    const buffer = this.tokenBuffer;
    const at = this.tokenAt;
    for (let i = 0; i < expected.length; i++) {
      if (buffer[at + i] !== expected[i]) return false;
    }
    return true;
  }

  protected copyToken(): Buffer {
    const copy = Buffer.allocUnsafe(this.#tokenLength);
    this.tokenBuffer.copy(copy, 0, this.tokenAt, this.tokenAt + this.#tokenLength);
    return copy;
  }

  protected checkZero(buffer: Buffer, at: number, length: number, offset: number): void {
    for (let i = 0; i < length; i++) {
      if (buffer[at + i] !== 0) {
        throw narError(
          'FIRN_E_NAR_BAD_PADDING',
          `padding byte ${i} is 0x${(buffer[at + i] ?? 0).toString(16).padStart(2, '0')}, not zero`,
          offset + i,
        );
      }
    }
  }

  // ── errors ────────────────────────────────────────────────────────────────

  /** The root object is complete, yet the chunk goes on. */
  protected trailingData(): FirnError {
    return narError(
      'FIRN_E_NAR_TRAILING_DATA',
      `${this.chunk.length - this.pos} or more bytes follow the end of the NAR`,
      this.offset,
    );
  }

  protected unexpected(expected: string): FirnError {
    const found = this.tokenBuffer.subarray(this.tokenAt, this.tokenAt + this.#tokenLength);
    return narError(
      'FIRN_E_NAR_UNEXPECTED_TOKEN',
      `expected ${expected} in ${this.where()} but found ${JSON.stringify(found.toString('latin1'))}`,
      this.stringOffset,
    );
  }
}

/** A parse error at byte `offset` of the NAR. */
export function narError(code: ErrorCode, message: string, offset: number): FirnError {
  return firnError(code, `${message} (at byte ${offset})`, { details: { offset } });
}

/** A u64 read by NarLexer.u64() (Infinity beyond 2^53), for messages. */
export function formatSize(size: number): string {
  return Number.isFinite(size) ? String(size) : 'more than 2^53';
}

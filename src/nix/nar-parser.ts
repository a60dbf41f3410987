/**
 * The NAR grammar as a synchronous push parser: feed it chunks, get events back. Every tag,
 * name and the order of directory entries is checked here; the byte level (strings, lengths,
 * padding, chunk boundaries) is its base class `NarLexer` in `nar-lexer.ts`. File contents pass
 * through as views of the input chunks, so memory stays constant whatever the NAR holds.
 */
import { FirnError } from '../errors.ts';
import type { NarEvent } from './nar-events.ts';
import { NAR_LIMITS, padLength } from './nar-format.ts';
import { NAR_STATES, NAR_TAGS, describeNode, expectedIn, type State } from './nar-grammar.ts';
import { NarLexer, type Tag } from './nar-lexer.ts';
import {
  badName,
  badTarget,
  fileTooLarge,
  isValidName,
  joinPath,
  tooDeep,
  unsorted,
} from './nar-checks.ts';

const EMPTY = Buffer.alloc(0);

// Module-local aliases on purpose: V8 folds a module's own constants into the switch and compares
// below, but loads an imported binding afresh each time (5% slower on NARs of many small files).
const S = NAR_STATES;
const T = NAR_TAGS;

interface Frame {
  readonly path: Buffer;
  readonly depth: number;
  previous: Buffer | undefined;
}

export class NarParser extends NarLexer {
  #state: State = S.magic;
  // Tree position.
  readonly #stack: Frame[] = [];
  #nodeOffset = 0;
  #childName: Buffer = EMPTY;
  #childPath: Buffer = EMPTY;
  #executable = false;
  #size = 0;
  #remaining = 0;
  #events: NarEvent[] = [];

  /** True once the root object is complete. */
  get done(): boolean {
    return this.#state === S.done;
  }

  /**
   * Parses `chunk` and returns the events it completes. `contents` events are views of
   * `chunk`. Throws a FirnError (FIRN_E_NAR_…) at the first fault, and again on later calls.
   */
  push(chunk: Buffer): NarEvent[] {
    if (this.failed !== undefined) throw this.failed;
    this.chunk = chunk;
    this.pos = 0;
    this.#events = [];
    try {
      while (this.pos < chunk.length && this.#step()) {
        // #step consumed a token or some contents
      }
    } catch (error) {
      if (error instanceof FirnError) this.failed = error;
      throw error;
    } finally {
      this.base += chunk.length;
      this.pos = 0;
      this.chunk = EMPTY;
    }
    return this.#events;
  }

  /** Declares the end of input; throws FIRN_E_NAR_TRUNCATED unless the root object is whole. */
  end(): void {
    this.finish(this.#state === S.done);
  }

  /** Advances by one token (or a run of contents); false when more input is needed. */
  #step(): boolean {
    switch (this.#state) {
      case S.magic: {
        if (!this.magic()) return false;
        this.#nodeOffset = this.offset;
        this.#state = S.open;
        return true;
      }
      case S.open:
        return this.#expect(T.open, S.typeTag);
      case S.typeTag:
        return this.#expect(T.type, S.type);
      case S.type:
        return this.#nodeType();
      case S.executableOrContents: {
        if (this.match(T.contents)) this.#state = S.contentsLength;
        else if (this.match(T.executable)) this.#state = S.executableValue;
        else if (!this.tag()) return false;
        else if (this.tokenIs(T.executable.text)) this.#state = S.executableValue;
        else if (this.tokenIs(T.contents.text)) this.#state = S.contentsLength;
        else throw this.unexpected('"executable" or "contents"');
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
        throw this.trailingData();
    }
  }

  #nodeType(): boolean {
    let type: Tag;
    if (this.match(T.regular)) type = T.regular;
    else if (this.match(T.directory)) type = T.directory;
    else if (this.match(T.symlink)) type = T.symlink;
    else if (!this.tag()) return false;
    else if (this.tokenIs(T.regular.text)) type = T.regular;
    else if (this.tokenIs(T.directory.text)) type = T.directory;
    else if (this.tokenIs(T.symlink.text)) type = T.symlink;
    else throw this.unexpected('"regular", "symlink" or "directory"');
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
    if (!this.take(8)) return false;
    const at = this.takeOffset;
    const size = this.u64();
    if (size > NAR_LIMITS.contents) throw fileTooLarge(this.#childPath, size, at);
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
    const n = Math.min(this.#remaining, this.chunk.length - this.pos);
    this.#events.push({ type: 'contents', data: this.chunk.subarray(this.pos, this.pos + n) });
    this.pos += n;
    this.#remaining -= n;
    if (this.#remaining === 0) this.#state = S.contentsPadding;
  }

  #contentsPadding(): boolean {
    const length = padLength(this.#size);
    if (!this.take(length)) return false;
    this.checkZero(this.tokenBuffer, this.tokenAt, length, this.takeOffset);
    this.#state = S.close;
    return true;
  }

  #target(): boolean {
    if (!this.string(NAR_LIMITS.target, 'FIRN_E_NAR_LIMIT', 'symlink target')) return false;
    const target = this.copyToken();
    if (target.length === 0 || target.includes(0)) {
      throw badTarget(this.#childPath, target, this.stringOffset);
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
    if (this.match(T.entry)) entry = true;
    else if (this.match(T.close)) entry = false;
    else if (!this.tag()) return false;
    else if (this.tokenIs(T.entry.text)) entry = true;
    else if (this.tokenIs(T.close.text)) entry = false;
    else throw this.unexpected('"entry" or ")"');
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
    if (!this.string(NAR_LIMITS.name, 'FIRN_E_NAR_LIMIT', 'entry name')) return false;
    const at = this.stringOffset;
    const frame = this.#stack.at(-1);
    if (frame === undefined) throw new Error('NAR parser: entry name outside a directory');
    const name = this.copyToken();
    if (!isValidName(name)) throw badName(name, frame.path, at);
    if (frame.previous !== undefined && Buffer.compare(frame.previous, name) >= 0) {
      throw unsorted(frame.previous, name, frame.path, at);
    }
    if (frame.depth + 1 > NAR_LIMITS.depth) throw tooDeep(frame.path, at);
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

  /** Reads the tag `expected` and moves to `next`. */
  #expect(expected: Tag, next: State): boolean {
    if (!this.match(expected)) {
      if (!this.tag()) return false;
      if (!this.tokenIs(expected.text)) {
        throw this.unexpected(`"${expected.text.toString('latin1')}"`);
      }
    }
    this.#state = next;
    return true;
  }

  /** The token the grammar expects next, for messages. */
  protected override expectation(): string {
    return expectedIn(this.#state);
  }

  /** The node being parsed, for messages. */
  protected override where(): string {
    return describeNode(this.#state, this.#stack.at(-1)?.path ?? EMPTY, this.#childPath);
  }
}

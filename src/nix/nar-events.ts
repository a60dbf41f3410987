/**
 * The events the NAR parser emits, one per node plus the contents of regular files. They are
 * the whole interface between the parser and its consumers (listing, unpacking, digests), so
 * they live apart from the state machine that produces them; `nar-reader.ts` re-exports them.
 */

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

/**
 * Streaming NAR writer: serialises a file, symlink or directory tree exactly like
 * `nix-store --dump`, in constant memory.
 *
 * The walk uses synchronous fs calls on purpose: the async API goes through the libuv thread
 * pool at tens of microseconds per call, which makes a tree of 50,000 small files several times
 * slower than Nix. Each call is short (metadata or one read of at most one chunk), and the
 * streaming and hashing wrappers below give the event loop a turn between chunks.
 */
import {
  closeSync,
  constants,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  fstatSync,
  type Dirent,
  type Stats,
} from 'node:fs';
import { once } from 'node:events';
import { Readable, type Writable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { firnError, fromFsError } from '../errors.ts';
import type { Hash, HashAlgorithm } from './hash.ts';
import { NAR_MAGIC, encodeStrings, padLength } from './nar-format.ts';

/**
 * Output chunk size. 256 KiB measured fastest for copying file data out of the page cache (it
 * stays in the CPU cache; 1 MiB chunks were 1.7x slower) while amortising syscalls and hashing.
 */
export const NAR_CHUNK_SIZE = 256 * 1024;
const CHUNK_SIZE = NAR_CHUNK_SIZE;

// Fixed token sequences, precomputed so a file costs a few small copies.
const MAGIC = encodeStrings(NAR_MAGIC);
const REGULAR = encodeStrings('(', 'type', 'regular');
const EXECUTABLE = encodeStrings('executable', '');
const CONTENTS = encodeStrings('contents');
const SYMLINK = encodeStrings('(', 'type', 'symlink', 'target');
const DIRECTORY = encodeStrings('(', 'type', 'directory');
const ENTRY = encodeStrings('entry', '(', 'name');
const NODE = encodeStrings('node');
const CLOSE = encodeStrings(')');
const SLASH = Buffer.from('/');

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

export interface NarWriteOptions {
  /**
   * Yield the same buffer again and again (valid only until the next chunk is asked for).
   * Saves an allocation per chunk for consumers that use each chunk at once, such as a hash.
   */
  readonly reuseBuffer?: boolean;
  /** Take chunk buffers from this pool (the consumer gives them back). */
  readonly pool?: ChunkPool;
}

function chunkSource(options: NarWriteOptions): () => Buffer {
  const { pool } = options;
  if (pool !== undefined) return () => pool.get();
  if (options.reuseBuffer !== true) return () => Buffer.allocUnsafeSlow(CHUNK_SIZE);
  let only: Buffer | undefined;
  return () => (only ??= Buffer.allocUnsafeSlow(CHUNK_SIZE));
}

/**
 * Chunk buffers a writer hands back once they were written, so packing a large tree reuses a
 * few buffers instead of leaving a trail of garbage for the GC (which showed as 250 MB of RSS).
 */
export class ChunkPool {
  readonly #free: ArrayBuffer[] = [];

  get(): Buffer {
    const free = this.#free.pop();
    return free === undefined ? Buffer.allocUnsafeSlow(CHUNK_SIZE) : Buffer.from(free);
  }

  get hasFree(): boolean {
    return this.#free.length > 0;
  }

  /** Takes back a chunk this pool handed out (a view from offset 0 of one of its buffers). */
  release(chunk: Buffer): void {
    const buffer = chunk.buffer;
    if (
      buffer instanceof ArrayBuffer &&
      chunk.byteOffset === 0 &&
      buffer.byteLength === CHUNK_SIZE
    ) {
      if (this.#free.length < 8) this.#free.push(buffer);
    }
  }
}

/** Collects small tokens and file contents into one chunk-sized buffer. */
class ChunkBuffer {
  buffer: Buffer;
  pos = 0;
  readonly #next: () => Buffer;

  /** `next` gives the buffer that follows a full one (the same one when it may be reused). */
  constructor(next: () => Buffer) {
    this.#next = next;
    this.buffer = next();
  }

  room(): number {
    return this.buffer.length - this.pos;
  }

  /** Hands out what was written and starts a chunk with at least `need` bytes of room. */
  take(need = 0): Buffer {
    const full = this.buffer.subarray(0, this.pos);
    this.buffer = need > CHUNK_SIZE ? Buffer.allocUnsafe(need) : this.#next();
    this.pos = 0;
    return full;
  }

  put(bytes: Uint8Array): void {
    this.buffer.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** Writes a NAR string of a name decoded as latin1 (one char per byte). */
  putLatin1String(name: string): void {
    this.putLength(name.length);
    this.pos += this.buffer.write(name, this.pos, 'latin1');
    this.putPadding(name.length);
  }

  /** Writes a NAR string (length, bytes, padding). */
  putString(bytes: Uint8Array): void {
    this.putLength(bytes.length);
    this.put(bytes);
    this.putPadding(bytes.length);
  }

  /** Zero bytes up to the next multiple of 8 after a string of `length` bytes. */
  putPadding(length: number): void {
    for (let n = padLength(length); n > 0; n--) this.buffer[this.pos++] = 0;
  }

  putLength(length: number): void {
    this.buffer.writeUInt32LE(length % 0x1_0000_0000, this.pos);
    this.buffer.writeUInt32LE(Math.floor(length / 0x1_0000_0000), this.pos + 4);
    this.pos += 8;
  }
}

/** A node to write: its path (a Buffer once a name is not plain ASCII) and what readdir said. */
type FsPath = string | Buffer;
type TypeHint = 'file' | 'directory' | 'symlink' | 'unknown';

interface DirectoryFrame {
  readonly path: FsPath;
  /** Names decoded as latin1, so each char is one byte: JS order is then Nix's byte order. */
  readonly names: readonly string[];
  readonly hints: readonly TypeHint[];
  next: number;
}

function stringSize(length: number): number {
  return 8 + length + padLength(length);
}

function show(path: FsPath): string {
  return typeof path === 'string' ? path : path.toString('utf8');
}

// Names are latin1 strings; fs calls read string paths as UTF-8, so a name with a byte above
// 0x7f (two UTF-8 bytes) makes the path a Buffer.
function isAscii(name: string): boolean {
  return Buffer.byteLength(name, 'utf8') === name.length;
}

function childPath(dir: FsPath, name: string): FsPath {
  if (typeof dir === 'string' && isAscii(name)) return `${dir}/${name}`;
  return Buffer.concat([
    typeof dir === 'string' ? Buffer.from(dir) : dir,
    SLASH,
    Buffer.from(name, 'latin1'),
  ]);
}

function hintOf(entry: Dirent): TypeHint {
  if (entry.isFile()) return 'file';
  if (entry.isDirectory()) return 'directory';
  if (entry.isSymbolicLink()) return 'symlink';
  return 'unknown';
}

function readDirectory(path: FsPath): DirectoryFrame {
  let entries: Dirent[];
  try {
    entries = readdirSync(path, { encoding: 'latin1', withFileTypes: true });
  } catch (error) {
    throw fromFsError(error, show(path), 'read directory');
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { path, names: entries.map((e) => e.name), hints: entries.map(hintOf), next: 0 };
}

function lstatOf(path: FsPath): Stats {
  try {
    return lstatSync(path);
  } catch (error) {
    throw fromFsError(error, show(path), 'read');
  }
}

function readTarget(path: FsPath): Buffer {
  try {
    return readlinkSync(path, { encoding: 'buffer' });
  } catch (error) {
    throw fromFsError(error, show(path), 'read symlink');
  }
}

interface OpenFile {
  readonly fd: number;
  readonly size: number;
  readonly executable: boolean;
}

/**
 * Opens `path` if it is a regular file (never through a symlink, never blocking on a FIFO).
 * fstat on the open file costs less than a second path lookup with lstat.
 */
function openRegular(path: FsPath): OpenFile | undefined {
  let fd: number;
  try {
    fd = openSync(path, OPEN_FLAGS);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') return undefined;
    throw fromFsError(error, show(path), 'open');
  }
  let stat: Stats;
  try {
    stat = fstatSync(fd);
  } catch (error) {
    closeSync(fd);
    throw fromFsError(error, show(path), 'read');
  }
  if (!stat.isFile()) {
    closeSync(fd);
    return undefined;
  }
  return { fd, size: stat.size, executable: (stat.mode & constants.S_IXUSR) !== 0 };
}

/** What a node turned out to be; readdir's hint is trusted only as far as the fs confirms it. */
type Node =
  | { readonly kind: 'file'; readonly file: OpenFile }
  | { readonly kind: 'directory'; readonly frame: DirectoryFrame }
  | { readonly kind: 'symlink'; readonly target: Buffer };

function inspect(path: FsPath, hint: TypeHint): Node {
  if (hint === 'file') {
    const file = openRegular(path);
    if (file !== undefined) return { kind: 'file', file };
  }
  const stat = lstatOf(path);
  if (stat.isFile()) {
    const file = openRegular(path);
    if (file !== undefined) return { kind: 'file', file };
    throw firnError('FIRN_E_IO', `${show(path)} changed type while it was being read`, {
      hint: 'make sure nothing writes to the tree while firn reads it',
    });
  }
  if (stat.isDirectory()) return { kind: 'directory', frame: readDirectory(path) };
  if (stat.isSymbolicLink()) return { kind: 'symlink', target: readTarget(path) };
  throw firnError(
    'FIRN_E_NAR_UNSUPPORTED_FILE',
    `${show(path)} is a socket, FIFO or device file, which a NAR cannot hold`,
    { details: { path: show(path) } },
  );
}

/**
 * The NAR of `path` as a sequence of chunks, computed lazily with blocking fs calls. Never holds
 * more than one chunk of a file. Prefer `narStream` or `hashPathNar` unless blocking is fine.
 */
export function* narChunks(path: string, options: NarWriteOptions = {}): Generator<Buffer> {
  const out = new ChunkBuffer(chunkSource(options));
  out.put(MAGIC);
  const stack: DirectoryFrame[] = [];
  let nodePath: FsPath = path;
  let hint: TypeHint = 'unknown';
  for (;;) {
    const node = inspect(nodePath, hint);
    if (node.kind === 'directory') {
      if (out.room() < DIRECTORY.length) yield out.take();
      out.put(DIRECTORY);
      stack.push(node.frame);
    } else if (node.kind === 'file') {
      const { size } = node.file;
      const header = REGULAR.length + EXECUTABLE.length + CONTENTS.length + 8;
      if (out.room() < header) yield out.take();
      out.put(REGULAR);
      if (node.file.executable) out.put(EXECUTABLE);
      out.put(CONTENTS);
      out.putLength(size);
      // Read straight into the output buffer; no generator per file (50,000 files add up).
      try {
        for (let remaining = size; remaining > 0;) {
          if (out.room() === 0) yield out.take();
          remaining -= readInto(nodePath, node.file, out, remaining);
        }
      } finally {
        closeSync(node.file.fd);
      }
      if (out.room() < 8 + CLOSE.length) yield out.take();
      out.putPadding(size);
      out.put(CLOSE);
    } else {
      const need = SYMLINK.length + stringSize(node.target.length) + CLOSE.length;
      if (out.room() < need) yield out.take(need);
      out.put(SYMLINK);
      out.putString(node.target);
      out.put(CLOSE);
    }

    // Close finished directories and move to the next entry, depth first.
    let frame = stack.at(-1);
    if (frame === undefined) break;
    if (node.kind !== 'directory') {
      if (out.room() < CLOSE.length) yield out.take();
      out.put(CLOSE); // the entry of the node just written
    }
    while (frame !== undefined && frame.next === frame.names.length) {
      stack.pop();
      frame = stack.at(-1);
      const need = CLOSE.length * 2;
      if (out.room() < need) yield out.take();
      out.put(CLOSE); // the directory node
      if (frame !== undefined) out.put(CLOSE); // the entry holding it
    }
    if (frame === undefined) break;
    const index = frame.next++;
    const name = frame.names[index] ?? '';
    hint = frame.hints[index] ?? 'unknown';
    const need = ENTRY.length + stringSize(name.length) + NODE.length;
    if (out.room() < need) yield out.take(need);
    out.put(ENTRY);
    out.putLatin1String(name);
    out.put(NODE);
    nodePath = childPath(frame.path, name);
  }
  if (out.pos > 0) yield out.take();
}

/** Reads up to `remaining` bytes of `file` into the room left in `out`; returns the count. */
function readInto(path: FsPath, file: OpenFile, out: ChunkBuffer, remaining: number): number {
  let read: number;
  try {
    read = readSync(file.fd, out.buffer, out.pos, Math.min(remaining, out.room()), null);
  } catch (error) {
    throw fromFsError(error, show(path), 'read');
  }
  if (read === 0) {
    throw firnError(
      'FIRN_E_IO',
      `${show(path)} shrank while it was being read (${file.size - remaining} of ${file.size} bytes)`,
      { hint: 'make sure nothing writes to the tree while firn reads it' },
    );
  }
  out.pos += read;
  return read;
}

/** The NAR of `path` as a byte stream with backpressure. */
export function narStream(path: string): Readable {
  let chunks: Generator<Buffer> | undefined;
  return new Readable({
    highWaterMark: 2 * CHUNK_SIZE,
    read() {
      try {
        chunks ??= narChunks(path);
        for (;;) {
          const next = chunks.next();
          if (next.done === true) {
            this.push(null);
            return;
          }
          if (!this.push(next.value)) return;
        }
      } catch (error) {
        this.destroy(error as Error);
      }
    },
    destroy(error, callback) {
      try {
        chunks?.return(undefined); // closes an open file
      } finally {
        callback(error);
      }
    },
  });
}

/**
 * Writes the NAR of `path` to `out` with backpressure; resolves to the NAR size once every
 * chunk was handed to `out`. Buffers are recycled as `out` finishes writing them, so memory
 * stays at a few chunks whatever the tree. Does not end `out`.
 */
export async function writeNar(path: string, out: Writable): Promise<number> {
  const pool = new ChunkPool();
  let size = 0;
  for (const chunk of narChunks(path, { pool })) {
    size += chunk.length;
    const more = out.write(chunk, () => {
      pool.release(chunk);
    });
    if (!more) await once(out, 'drain');
    // A stream that wrote at once (stdout to a file) calls back on the next tick: let it.
    else if (!pool.hasFree) await nextTurn();
  }
  return size;
}

export interface NarDigest {
  readonly hash: Hash;
  /** NAR size in bytes. */
  readonly size: number;
}

/** Time between event-loop turns while hashing, so timers and sockets are not starved. */
const TURN_MS = 20;

/** Hash and size of the NAR of `path`, as in `nix hash path` and a narinfo's NarHash/NarSize. */
export async function hashPathNar(
  path: string,
  algorithm: HashAlgorithm = 'sha256',
): Promise<NarDigest> {
  // Loaded here: `firn nar pack` does not need node:crypto, and it costs milliseconds to load.
  const { createHash } = await import('node:crypto');
  const hash = createHash(algorithm);
  let size = 0;
  let turn = performance.now();
  for (const chunk of narChunks(path, { reuseBuffer: true })) {
    hash.update(chunk);
    size += chunk.length;
    if (performance.now() - turn > TURN_MS) {
      await nextTurn();
      turn = performance.now();
    }
  }
  return { hash: { algorithm, digest: hash.digest() }, size };
}

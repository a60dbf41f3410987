/**
 * The NAR wire format shared by the writer, reader and listing: every token is a string
 * `u64le(length) ‖ bytes ‖ zero padding to 8`, and the grammar is
 *
 *   nar  = "nix-archive-1" node
 *   node = "(" "type" ( "regular" ["executable" ""] "contents" BYTES
 *                     | "symlink" "target" TARGET
 *                     | "directory" { "entry" "(" "name" NAME "node" node ")" } ) ")"
 *
 * (NixOS/nix 2.8 src/libutil/archive.cc). Directory entries are sorted bytewise and unique.
 */

export const NAR_MAGIC = 'nix-archive-1';

/** Safety limits the reader enforces; Nix writes nothing beyond them. */
export const NAR_LIMITS = {
  /** Linux NAME_MAX. */
  name: 255,
  /** Linux PATH_MAX, the longest target `readlink` returns. */
  target: 4096,
  /**
   * Directory nesting. Real store paths stay far below it, while a hostile NAR could nest
   * millions of directories; unpacking would then build paths longer than PATH_MAX anyway.
   */
  depth: 256,
  /** File sizes must stay exact in a JS number. */
  contents: Number.MAX_SAFE_INTEGER,
} as const;

/** Bytes of zero padding after a string of `length` bytes. */
export function padLength(length: number): number {
  return (8 - (length % 8)) % 8;
}

/** The encoded form of `strings` as consecutive NAR strings. */
export function encodeStrings(...strings: readonly (string | Uint8Array)[]): Buffer {
  const parts = strings.map((s) => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s));
  const out = Buffer.alloc(parts.reduce((n, p) => n + 8 + p.length + padLength(p.length), 0));
  let pos = 0;
  for (const part of parts) {
    out.writeUInt32LE(part.length, pos);
    out.set(part, pos + 8);
    pos += 8 + part.length + padLength(part.length);
  }
  return out;
}

/** A path inside a NAR as bytes ('' for the root), for messages. */
export function displayNarPath(path: Uint8Array): string {
  return path.length === 0 ? '/' : `/${Buffer.from(path).toString('utf8')}`;
}

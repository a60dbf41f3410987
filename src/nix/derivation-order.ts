/**
 * The order Nix keeps the maps and sets of a derivation in: by UTF-8 bytes, as std::string
 * compares. The parser checks it and the writer and the JSON form sort by it, so it is shared.
 */

/**
 * Compares as Nix's std::string does, by UTF-8 bytes. That is code point order, which differs
 * from JavaScript's UTF-16 order only between surrogates and U+E000..U+FFFF.
 */
export function compareBytes(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

function codePointRank(unit: number): number {
  if (unit >= 0xe000) return unit - 0x800;
  if (unit >= 0xd800) return unit + 0x2000;
  return unit;
}

/** The entries of `map`, sorted by key. */
export function sortedEntries<V>(map: ReadonlyMap<string, V>): [string, V][] {
  return [...map.entries()].sort(([a], [b]) => compareBytes(a, b));
}

/** `values` sorted, each once. */
export function sortedUnique(values: readonly string[]): string[] {
  const sorted = [...values].sort(compareBytes);
  return sorted.filter((value, i) => i === 0 || value !== sorted[i - 1]);
}

/**
 * Finds the line a key path (`hosts.opi01.systems`) was written on, so an inventory error can
 * say `firn.toml:14`. TOML parsers return values, not positions; this scans the text for table
 * headers and `key =` lines, which covers how inventories are written (one table per host).
 * Keys inside inline tables or written as dotted keys may not be found; then there is no line.
 */

interface KeyLine {
  readonly path: readonly string[];
  readonly line: number;
}

/** The 1-based line of the longest prefix of `path` found in `text`, or undefined. */
export function locateKey(text: string, path: readonly PropertyKey[]): number | undefined {
  const keys = path.filter((part): part is string => typeof part === 'string');
  const lines = indexLines(text);
  for (let length = keys.length; length > 0; length--) {
    const prefix = keys.slice(0, length);
    const found =
      lines.find((entry) => sameKeys(entry.path, prefix)) ??
      lines.find((entry) => sameKeys(entry.path.slice(0, length), prefix));
    if (found !== undefined) return found.line;
  }
  return undefined;
}

function indexLines(text: string): KeyLine[] {
  const result: KeyLine[] = [];
  let table: string[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    const header = /^\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$/.exec(line);
    if (header !== null) {
      table = splitDotted(header[1] ?? '');
      result.push({ path: table, line: index + 1 });
      return;
    }
    const key = /^("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=/.exec(line);
    if (key !== null) {
      result.push({ path: [...table, ...splitDotted(key[1] ?? '')], line: index + 1 });
    }
  });
  return result;
}

/** `hosts."opi 01".x` → ["hosts", "opi 01", "x"]. */
function splitDotted(text: string): string[] {
  const parts: string[] = [];
  const pattern = /\s*("((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*(\.|$)/y;
  let match: RegExpExecArray | null;
  while (pattern.lastIndex < text.length && (match = pattern.exec(text)) !== null) {
    parts.push(match[2] ?? match[3] ?? match[4] ?? '');
    if (match[5] === '') break;
  }
  return parts;
}

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((part, index) => part === b[index]);
}

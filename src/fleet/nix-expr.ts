/**
 * Writing Nix expressions from data: strings escaped so any text round-trips, attribute names
 * quoted when they must be, attribute sets indented with single-key chains collapsed into
 * dotted paths (`openssh.authorizedKeys.keys = [ … ];`), as a person would write them.
 *
 * API: `nixString`, `nixAttrName`, `nixValue`, `nixRaw` (an expression written as is, e.g.
 * `lib.mkDefault "…"`), type `NixValue`.
 */

export interface NixRaw {
  readonly nixRaw: string;
}

export type NixValue = string | number | boolean | null | NixRaw | readonly NixValue[] | NixAttrs;

// An interface, not a Record alias: a type alias cannot refer to itself through Record.
export interface NixAttrs {
  readonly [name: string]: NixValue;
}

const KEYWORDS = new Set([
  'if',
  'then',
  'else',
  'assert',
  'with',
  'let',
  'in',
  'rec',
  'inherit',
  'or',
]);

/** A Nix expression written out as given, e.g. `nixRaw('lib.mkDefault "x"')`. */
export function nixRaw(expression: string): NixRaw {
  return { nixRaw: expression };
}

/** A double-quoted Nix string holding exactly `text`. */
export function nixString(text: string): string {
  const escaped = text
    .replace(/\\/g, '\\\\')
    .replace(/"/g, '\\"')
    .replace(/\$\{/g, '\\${')
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(/\t/g, '\\t');
  return `"${escaped}"`;
}

/** `name` bare when Nix allows it, else quoted. */
export function nixAttrName(name: string): string {
  return /^[A-Za-z_][A-Za-z0-9_'-]*$/.test(name) && !KEYWORDS.has(name) ? name : nixString(name);
}

function isRaw(value: NixValue): value is NixRaw {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && 'nixRaw' in value;
}

function isAttrs(value: NixValue): value is NixAttrs {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !isRaw(value);
}

/** `value` as a Nix expression; nested values are indented by two spaces from `indent`. */
export function nixValue(value: NixValue, indent = ''): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return nixString(value);
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`nixValue: ${value} is not an integer`);
    return String(value);
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (isRaw(value)) return value.nixRaw;
  if (Array.isArray(value)) return nixList(value, indent);
  if (isAttrs(value)) return nixAttrs(value, indent);
  throw new Error('nixValue: unreachable');
}

function nixList(items: readonly NixValue[], indent: string): string {
  if (items.length === 0) return '[ ]';
  const inner = indent + '  ';
  const rendered = items.map((item) => nixValue(item, inner));
  const oneLine = `[ ${rendered.join(' ')} ]`;
  if (rendered.every((item) => !item.includes('\n')) && oneLine.length + indent.length <= 100) {
    return oneLine;
  }
  return `[\n${rendered.map((item) => `${inner}${item}`).join('\n')}\n${indent}]`;
}

function nixAttrs(attrs: NixAttrs, indent: string): string {
  const entries = Object.entries(attrs);
  if (entries.length === 0) return '{ }';
  const inner = indent + '  ';
  const lines = entries.map(([name, value]) => nixBinding([name], value, inner));
  return `{\n${lines.join('\n')}\n${indent}}`;
}

/** `a.b.c = value;`, following attribute sets that have a single key. */
export function nixBinding(path: readonly string[], value: NixValue, indent: string): string {
  let names = [...path];
  let current = value;
  while (isAttrs(current)) {
    const entries = Object.entries(current);
    const [only] = entries;
    if (entries.length !== 1 || only === undefined) break;
    names = [...names, only[0]];
    current = only[1];
  }
  return `${indent}${names.map(nixAttrName).join('.')} = ${nixValue(current, indent)};`;
}

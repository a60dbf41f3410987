/**
 * The JSON form of derivations, as `nix show-derivation` prints it: the object for one
 * derivation, and the exact text (key order, indentation and string escaping of Nix 2.8) that
 * `firn drv show` prints. Separate from the ATerm reader and writer, which it does not need.
 */
import { sortedEntries, sortedUnique } from './derivation-order.ts';
import type { Derivation, DerivationOutput } from './derivation-types.ts';

/** What `nix show-derivation` prints for one output. */
function outputJson(output: DerivationOutput): Record<string, unknown> {
  if (output.hashAlgo === '') return output.path === '' ? {} : { path: output.path };
  if (output.hash === 'impure') return { hashAlgo: output.hashAlgo, impure: true };
  if (output.hash === '') return { hashAlgo: output.hashAlgo };
  return { path: output.path, hashAlgo: output.hashAlgo, hash: output.hash };
}

/** `{ [drvPath]: {outputs, inputSrcs, inputDrvs, system, builder, args, env} }` as Nix 2.8 prints. */
export function derivationToJson(drvPath: string, drv: Derivation): Record<string, unknown> {
  // Object.fromEntries keeps keys such as `__proto__` as plain own properties.
  const body = {
    outputs: Object.fromEntries(sortedEntries(drv.outputs).map(([k, o]) => [k, outputJson(o)])),
    inputSrcs: sortedUnique(drv.inputSrcs),
    inputDrvs: Object.fromEntries(
      sortedEntries(drv.inputDrvs).map(([path, names]) => [path, sortedUnique(names)]),
    ),
    system: drv.system,
    builder: drv.builder,
    args: [...drv.args],
    env: Object.fromEntries(sortedEntries(drv.env)),
  };
  return Object.fromEntries([[drvPath, body]]);
}

/** An ordered JSON tree: objects as entry lists, so key order never depends on JS rules. */
type JsonTree = string | boolean | readonly JsonTree[] | { readonly entries: JsonEntries };
type JsonEntries = readonly (readonly [string, JsonTree])[];

/**
 * The exact text `nix show-derivation` prints for these derivations: keys sorted by drv path,
 * duplicates dropped, two-space indentation and Nix's own string escaping, ending in a newline.
 */
export function formatShowDerivation(derivations: Iterable<readonly [string, Derivation]>): string {
  const byPath = new Map<string, Derivation>();
  for (const [path, drv] of derivations) byPath.set(path, drv);
  const root: JsonEntries = sortedEntries(byPath).map(([path, drv]) => [path, showTree(drv)]);
  return renderJson({ entries: root }, 0) + '\n';
}

function showTree(drv: Derivation): JsonTree {
  const object = (entries: JsonEntries): JsonTree => ({ entries });
  return object([
    [
      'outputs',
      object(
        sortedEntries(drv.outputs).map(([name, o]) => [
          name,
          object(Object.entries(outputJson(o)) as [string, string | boolean][]),
        ]),
      ),
    ],
    ['inputSrcs', sortedUnique(drv.inputSrcs)],
    [
      'inputDrvs',
      object(sortedEntries(drv.inputDrvs).map(([path, names]) => [path, sortedUnique(names)])),
    ],
    ['system', drv.system],
    ['builder', drv.builder],
    ['args', drv.args],
    ['env', object(sortedEntries(drv.env))],
  ]);
}

/** Nix 2.8's JSONWriter with indentation: `{`, then `\n` + 2·depth spaces before each item. */
function renderJson(value: JsonTree, depth: number): string {
  if (typeof value === 'string') return nixJsonString(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  const pad = '\n' + '  '.repeat(depth + 1);
  const end = '\n' + '  '.repeat(depth);
  if (isJsonArray(value)) {
    if (value.length === 0) return '[]';
    return `[${value.map((item) => pad + renderJson(item, depth + 1)).join(',')}${end}]`;
  }
  if (value.entries.length === 0) return '{}';
  const items = value.entries.map(
    ([key, item]) => `${pad}${nixJsonString(key)}: ${renderJson(item, depth + 1)}`,
  );
  return `{${items.join(',')}${end}}`;
}

function isJsonArray(value: JsonTree): value is readonly JsonTree[] {
  return Array.isArray(value);
}

/**
 * Nix's toJSON for strings: `"`, `\`, `\n`, `\r`, `\t` escaped, other control characters as
 * `\u00XX`, everything else (DEL and non-ASCII included) written as is.
 */
export function nixJsonString(s: string): string {
  let out = '"';
  let chunk = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c !== 0x22 && c !== 0x5c) continue;
    out += s.slice(chunk, i) + jsonEscape(c);
    chunk = i + 1;
  }
  return out + s.slice(chunk) + '"';
}

function jsonEscape(c: number): string {
  switch (c) {
    case 0x22:
      return '\\"';
    case 0x5c:
      return '\\\\';
    case 0x0a:
      return '\\n';
    case 0x0d:
      return '\\r';
    case 0x09:
      return '\\t';
    default:
      return '\\u' + c.toString(16).padStart(4, '0');
  }
}

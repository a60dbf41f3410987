/**
 * Writing a derivation back as the exact ATerm text Nix writes, so that a parsed `.drv` file
 * round-trips byte for byte. Separate from the reader: the two share only the byte order.
 */
import { sortedEntries, sortedUnique } from './derivation-order.ts';
import type { Derivation } from './derivation-types.ts';

/**
 * The ATerm text Nix would write for `drv`: maps and sets sorted by bytes, sets deduplicated.
 * Like Nix, names, paths, hashes and the system are written without escapes; only `"` and `\`
 * are escaped there so that whatever is written reads back the same.
 */
export function serializeDerivation(drv: Derivation): string {
  const outputs = sortedEntries(drv.outputs).map(
    ([name, o]) => `(${raw(name)},${raw(o.path)},${raw(o.hashAlgo)},${raw(o.hash)})`,
  );
  const inputDrvs = sortedEntries(drv.inputDrvs).map(
    ([path, names]) => `(${raw(path)},[${sortedUnique(names).map(raw).join(',')}])`,
  );
  const inputSrcs = sortedUnique(drv.inputSrcs).map(raw);
  const env = sortedEntries(drv.env).map(([name, value]) => `(${quote(name)},${quote(value)})`);
  return (
    `Derive([${outputs.join(',')}],[${inputDrvs.join(',')}],[${inputSrcs.join(',')}],` +
    `${raw(drv.system)},${quote(drv.builder)},[${drv.args.map(quote).join(',')}],` +
    `[${env.join(',')}])`
  );
}

/** Nix's printString: escapes `"`, `\`, newline, carriage return and tab. */
function quote(s: string): string {
  if (!/["\\\n\r\t]/.test(s)) return `"${s}"`;
  return `"${s.replace(/["\\\n\r\t]/g, (c) => QUOTE_ESCAPES[c] ?? c)}"`;
}

const QUOTE_ESCAPES: Readonly<Record<string, string>> = {
  '"': '\\"',
  '\\': '\\\\',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
};

/** Nix's printUnquotedString, made safe for `"` and `\`, which Nix never writes there. */
function raw(s: string): string {
  return `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

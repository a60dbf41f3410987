/**
 * Store derivations (`.drv` files): the ATerm text Nix writes,
 * `Derive([outputs],[inputDrvs],[inputSrcs],"system","builder",[args],[env])`.
 *
 * Strings are decoded exactly as Nix 2.8's parseString does (`\n`, `\r`, `\t`, and a backslash
 * before any other character stands for that character). The structure is read strictly:
 * Nix's writer puts exactly one comma between list items, sorts every map and set by bytes and
 * writes nothing after the closing parenthesis, so anything else is not a file Nix wrote and is
 * rejected with its byte offset rather than silently normalised.
 */
import { FirnError, firnError } from '../errors.ts';
import { formatDigest, isHashAlgorithm, parseDigest } from './hash.ts';
import {
  DEFAULT_STORE_DIR,
  parseStorePath,
  quoteForMessage,
  storePathNameProblem,
} from './store-path.ts';

export interface DerivationOutput {
  /** The output's store path; '' for floating content-addressed, deferred and impure outputs. */
  readonly path: string;
  /** `sha256` (flat) or `r:sha256` (recursive) for content-addressed outputs, else ''. */
  readonly hashAlgo: string;
  /** Base-16 digest of a fixed output, `impure` for an impure one, else ''. */
  readonly hash: string;
}

export interface Derivation {
  readonly outputs: ReadonlyMap<string, DerivationOutput>;
  /** drv path -> names of the outputs used */
  readonly inputDrvs: ReadonlyMap<string, readonly string[]>;
  readonly inputSrcs: readonly string[];
  readonly system: string;
  readonly builder: string;
  readonly args: readonly string[];
  readonly env: ReadonlyMap<string, string>;
}

export interface ParseDerivationOptions {
  readonly storeDir?: string;
  /** Largest input accepted, in bytes. */
  readonly maxBytes?: number;
}

/**
 * The biggest real derivations (NixOS system closures, large buildEnvs) are a few MiB; 64 MiB
 * leaves ample room while keeping a hostile file from exhausting memory.
 */
export const DEFAULT_MAX_DRV_BYTES = 64 * 1024 * 1024;

const HASH_ALGO = /^(r:)?([a-z0-9]+)$/;

// ── parsing ────────────────────────────────────────────────────────────────────────────────────

/** Parses the text (or UTF-8 bytes) of a `.drv` file; throws FIRN_E_DRV_INVALID with an offset. */
export function parseDerivation(
  input: string | Uint8Array,
  options: ParseDerivationOptions = {},
): Derivation {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_DRV_BYTES;
  const text = typeof input === 'string' ? input : decodeUtf8(input, maxBytes);
  if (text.length > maxBytes || (text.length * 3 > maxBytes && byteLength(text) > maxBytes)) {
    throw tooLarge(maxBytes);
  }
  return new DrvReader(text, options.storeDir ?? DEFAULT_STORE_DIR).derivation();
}

function decodeUtf8(bytes: Uint8Array, maxBytes: number): string {
  if (bytes.length > maxBytes) {
    throw tooLarge(maxBytes);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    const offset = firstInvalidUtf8(bytes);
    throw drvError('the derivation is not valid UTF-8', offset);
  }
}

/** Offset of the first byte that does not begin a well-formed UTF-8 sequence. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i] ?? 0;
    if (lead < 0x80) {
      i++;
      continue;
    }
    const extra = lead >= 0xc2 && lead <= 0xdf ? 1 : lead >= 0xe0 && lead <= 0xef ? 2 : 3;
    if (lead < 0xc2 || lead > 0xf4) return i;
    let codePoint = lead & (0x3f >> extra);
    for (let k = 1; k <= extra; k++) {
      const next = bytes[i + k];
      if (next === undefined || (next & 0xc0) !== 0x80) return i;
      codePoint = (codePoint << 6) | (next & 0x3f);
    }
    const min = extra === 1 ? 0x80 : extra === 2 ? 0x800 : 0x10000;
    if (codePoint < min || codePoint > 0x10ffff || (codePoint >= 0xd800 && codePoint <= 0xdfff)) {
      return i;
    }
    i += extra + 1;
  }
  return bytes.length;
}

function tooLarge(maxBytes: number): FirnError {
  return drvError(`the derivation is larger than the limit of ${maxBytes} bytes`, maxBytes, {
    limit: maxBytes,
  });
}

function byteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

function drvError(
  message: string,
  offset: number,
  details: Readonly<Record<string, unknown>> = {},
): FirnError {
  return firnError('FIRN_E_DRV_INVALID', `invalid derivation at byte ${offset}: ${message}`, {
    details: { offset, ...details },
  });
}

/** A cursor over the text; every method either consumes what it expects or throws. */
class DrvReader {
  readonly text: string;
  readonly storeDir: string;
  pos = 0;

  constructor(text: string, storeDir: string) {
    this.text = text;
    this.storeDir = storeDir;
  }

  derivation(): Derivation {
    this.expect('Derive(');
    const outputs = this.sortedMap('output name', () => this.output());
    if (outputs.size === 0) this.fail('a derivation must have at least one output', this.pos - 1);
    this.expect(',');
    const inputDrvs = this.sortedMap('input derivation', () => this.inputDrv());
    this.expect(',');
    const inputSrcs = this.sortedSet('input source', () => this.storePath());
    this.expect(',');
    const system = this.string();
    this.expect(',');
    const builder = this.string();
    this.expect(',');
    const args = this.list(() => this.string());
    this.expect(',');
    const env = this.sortedMap('environment variable', () => this.envEntry());
    this.expect(')');
    if (this.pos !== this.text.length) this.fail('unexpected data after the derivation');
    return { outputs, inputDrvs, inputSrcs, system, builder, args, env };
  }

  private output(): readonly [string, DerivationOutput] {
    this.expect('(');
    const name = this.outputName();
    this.expect(',');
    const pathAt = this.pos;
    const path = this.string();
    this.expect(',');
    const algoAt = this.pos;
    const hashAlgo = this.string();
    this.expect(',');
    const hashAt = this.pos;
    let hash = this.string();
    this.expect(')');
    if (hashAlgo === '') {
      if (hash !== '') this.fail('an output has a hash but no hash algorithm', hashAt);
      if (path !== '') this.checkPath(path, pathAt);
      return [name, { path, hashAlgo, hash }];
    }
    const algorithm = HASH_ALGO.exec(hashAlgo)?.[2] ?? '';
    if (!isHashAlgorithm(algorithm)) {
      this.fail(`unknown output hash algorithm ${quoteForMessage(hashAlgo)}`, algoAt);
    }
    if (hash === '' || hash === 'impure') {
      if (path !== '') this.fail('a floating or impure output cannot have a path', pathAt);
      return [name, { path, hashAlgo, hash }];
    }
    this.checkPath(path, pathAt);
    try {
      // Nix accepts base-16, nix-base32 and base-64 here and always writes base-16.
      hash = formatDigest(parseDigest(hash, algorithm), 'base16');
    } catch {
      this.fail(`${quoteForMessage(hash)} is not a ${algorithm} hash`, hashAt);
    }
    return [name, { path, hashAlgo, hash }];
  }

  private inputDrv(): readonly [string, readonly string[]] {
    this.expect('(');
    const at = this.pos;
    const path = this.storePath();
    if (!path.endsWith('.drv')) this.fail(`input derivation ${path} does not end in .drv`, at);
    this.expect(',');
    const names = this.sortedSet('output name', () => this.outputName());
    this.expect(')');
    return [path, names];
  }

  private envEntry(): readonly [string, string] {
    this.expect('(');
    const name = this.string();
    this.expect(',');
    const value = this.string();
    this.expect(')');
    return [name, value];
  }

  private outputName(): string {
    const at = this.pos;
    const name = this.string();
    // Output names become part of store path names, so they obey the same rules.
    const problem = storePathNameProblem(name);
    if (problem !== undefined)
      this.fail(`invalid output name ${quoteForMessage(name)}: ${problem}`, at);
    return name;
  }

  private storePath(): string {
    const at = this.pos;
    const path = this.string();
    this.checkPath(path, at);
    return path;
  }

  private checkPath(path: string, at: number): void {
    try {
      parseStorePath(path, this.storeDir);
    } catch (error) {
      if (!FirnError.is(error)) throw error;
      this.fail(error.message, at);
    }
  }

  /** `[item,item,…]` with exactly one comma between items, as Nix writes it. */
  private list<T>(item: () => T): T[] {
    this.expect('[');
    const items: T[] = [];
    if (this.text.charCodeAt(this.pos) === 0x5d /* ] */) {
      this.pos++;
      return items;
    }
    for (;;) {
      items.push(item());
      if (this.text.charCodeAt(this.pos) === 0x2c /* , */) this.pos++;
      else break;
    }
    this.expect(']');
    return items;
  }

  /** A list of `(key,…)` entries whose keys must be strictly increasing in byte order. */
  private sortedMap<V>(what: string, entry: () => readonly [string, V]): Map<string, V> {
    const map = new Map<string, V>();
    let previous: string | undefined;
    this.list(() => {
      const at = this.pos;
      const [key, value] = entry();
      this.checkOrder(what, previous, key, at);
      previous = key;
      map.set(key, value);
    });
    return map;
  }

  private sortedSet(what: string, item: () => string): string[] {
    let previous: string | undefined;
    return this.list(() => {
      const at = this.pos;
      const value = item();
      this.checkOrder(what, previous, value, at);
      previous = value;
      return value;
    });
  }

  private checkOrder(what: string, previous: string | undefined, key: string, at: number): void {
    if (previous === undefined) return;
    const order = compareBytes(previous, key);
    if (order === 0) this.fail(`duplicate ${what} ${quoteForMessage(key)}`, at);
    if (order > 0) this.fail(`${what} ${quoteForMessage(key)} is out of order`, at);
  }

  /** A quoted string, decoded as Nix 2.8's parseString does. */
  private string(): string {
    const start = this.pos;
    this.expect('"');
    const text = this.text;
    let out = '';
    let chunk = this.pos;
    for (let i = this.pos; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x22 /* " */) {
        this.pos = i + 1;
        return out + text.slice(chunk, i);
      }
      if (c === 0x5c /* \ */) {
        if (i + 1 >= text.length) this.fail('the input ends inside an escape sequence', i);
        out += text.slice(chunk, i) + unescape(text.charAt(i + 1));
        i++;
        chunk = i + 1;
      }
    }
    this.fail('unterminated string', start);
  }

  private expect(literal: string): void {
    if (!this.text.startsWith(literal, this.pos)) {
      this.fail(`expected '${literal}', found ${this.describeHere()}`);
    }
    this.pos += literal.length;
  }

  private describeHere(): string {
    if (this.pos >= this.text.length) return 'the end of the input';
    return quoteForMessage(this.text.slice(this.pos, this.pos + 13), 12);
  }

  private fail(message: string, at: number = this.pos): never {
    throw drvError(message, byteLength(this.text.slice(0, at)));
  }
}

function unescape(c: string): string {
  if (c === 'n') return '\n';
  if (c === 'r') return '\r';
  if (c === 't') return '\t';
  return c;
}

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

// ── writing ────────────────────────────────────────────────────────────────────────────────────

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

function sortedEntries<V>(map: ReadonlyMap<string, V>): [string, V][] {
  return [...map.entries()].sort(([a], [b]) => compareBytes(a, b));
}

function sortedUnique(values: readonly string[]): string[] {
  const sorted = [...values].sort(compareBytes);
  return sorted.filter((value, i) => i === 0 || value !== sorted[i - 1]);
}

// ── JSON like `nix show-derivation` ──────────────────────────────────────────────────────────────

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

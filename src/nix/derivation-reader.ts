/**
 * The ATerm reader behind parseDerivation: a cursor over the text of a `.drv` file,
 * `Derive([outputs],[inputDrvs],[inputSrcs],"system","builder",[args],[env])`.
 *
 * Strings are decoded exactly as Nix 2.8's parseString does (`\n`, `\r`, `\t`, and a backslash
 * before any other character stands for that character). The structure is read strictly:
 * Nix's writer puts exactly one comma between list items, sorts every map and set by bytes and
 * writes nothing after the closing parenthesis, so anything else is not a file Nix wrote and is
 * rejected with its byte offset rather than silently normalised. Input limits and UTF-8
 * decoding come before it, in `derivation-parse.ts`.
 */
import { FirnError, firnError } from '../errors.ts';
import { compareBytes } from './derivation-order.ts';
import type { Derivation, DerivationOutput } from './derivation-types.ts';
import { formatDigest, isHashAlgorithm, parseDigest } from './hash.ts';
import { parseStorePath, quoteForMessage, storePathNameProblem } from './store-path.ts';

const HASH_ALGO = /^(r:)?([a-z0-9]+)$/;

/** Length of `text` in UTF-8 bytes, the unit of every offset in messages. */
export function byteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** FIRN_E_DRV_INVALID at byte `offset` of the derivation. */
export function drvError(
  message: string,
  offset: number,
  details: Readonly<Record<string, unknown>> = {},
): FirnError {
  return firnError('FIRN_E_DRV_INVALID', `invalid derivation at byte ${offset}: ${message}`, {
    details: { offset, ...details },
  });
}

/** A cursor over the text; every method either consumes what it expects or throws. */
export class DrvReader {
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

/**
 * narinfo files: the `Key: value` lines a binary cache serves for each store path. Parsing
 * follows Nix 2.8 (src/libstore/nar-info.cc at tag 2.8.0) but is stricter where Nix would
 * accept nonsense (a line without ": ", control characters, malformed signatures), because a
 * cache stores and re-serves what it parses. Writing follows Nix 2.8 byte for byte.
 */
import { FirnError, firnError } from '../errors.ts';
import { formatHash, parseDigest, parseHash, parseHashAlgorithm, type Hash } from './hash.ts';
import { signatureProblem } from './signing.ts';
import {
  controlCharIndex,
  DEFAULT_STORE_DIR,
  parseStorePath,
  parseStorePathBase,
  quoteForMessage,
} from './store-path.ts';

export interface NarInfo {
  /** Full path, e.g. `/nix/store/<hash>-<name>`. */
  readonly storePath: string;
  readonly url: string;
  /** As written; `bzip2` when the line is absent or empty (Nix's default). */
  readonly compression: string;
  readonly fileHash?: Hash;
  readonly fileSize?: number;
  readonly narHash: Hash;
  readonly narSize: number;
  /** Base names (`<hash>-<name>`), as written. */
  readonly references: readonly string[];
  /** Base name of the .drv; absent when unknown. */
  readonly deriver?: string;
  readonly system?: string;
  /** `keyname:base64(signature)`, in the order written. */
  readonly sigs: readonly string[];
  /** Content address as written, e.g. `fixed:r:sha256:<nix32>`. */
  readonly ca?: string;
}

export interface ParseNarInfoOptions {
  readonly storeDir?: string;
  /** Largest input accepted, in UTF-8 bytes; default MAX_NARINFO_BYTES. */
  readonly maxBytes?: number;
}

/** Real narinfos are well under 64 KiB even with thousands of references. */
export const MAX_NARINFO_BYTES = 1024 * 1024;

const DEFAULT_COMPRESSION = 'bzip2';
const UNKNOWN_DERIVER = 'unknown-deriver';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The fields Nix knows. Each may appear once, except Sig. */
const FIELD_PARSERS: Readonly<
  Record<string, (info: Mutable<Partial<NarInfo>>, value: string, storeDir: string) => void>
> = {
  StorePath: (info, value, storeDir) => {
    parseStorePath(value, storeDir);
    info.storePath = value;
  },
  URL: (info, value) => {
    if (value === '') throw firnError('FIRN_E_NARINFO_INVALID', 'is empty');
    info.url = value;
  },
  Compression: (info, value) => {
    info.compression = value === '' ? DEFAULT_COMPRESSION : value;
  },
  FileHash: (info, value) => {
    info.fileHash = parseHash(value);
  },
  FileSize: (info, value) => {
    info.fileSize = parseSize(value);
  },
  NarHash: (info, value) => {
    info.narHash = parseHash(value);
  },
  NarSize: (info, value) => {
    const size = parseSize(value);
    if (size === 0) throw firnError('FIRN_E_NARINFO_INVALID', 'is 0; a NAR is never empty');
    info.narSize = size;
  },
  References: (info, value) => {
    const refs = value.split(' ').filter((ref) => ref !== '');
    for (const ref of refs) parseStorePathBase(ref);
    info.references = refs;
  },
  Deriver: (info, value) => {
    if (value === UNKNOWN_DERIVER) return;
    parseStorePathBase(value);
    info.deriver = value;
  },
  System: (info, value) => {
    if (value !== '') info.system = value;
  },
  CA: (info, value) => {
    if (value === '') return;
    checkContentAddress(value);
    info.ca = value;
  },
};

/** Parses a narinfo; throws FIRN_E_NARINFO_INVALID naming the line, or FIRN_E_INPUT_TOO_LARGE. */
export function parseNarInfo(text: string, options: ParseNarInfoOptions = {}): NarInfo {
  const maxBytes = options.maxBytes ?? MAX_NARINFO_BYTES;
  if (text.length > maxBytes || Buffer.byteLength(text, 'utf8') > maxBytes) {
    throw tooLarge(maxBytes);
  }
  const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
  const lines = text.split('\n');
  const last = lines.pop();
  if (last !== '') {
    throw lineError(lines.length + 1, 'the last line does not end in a newline');
  }
  const info: Mutable<Partial<NarInfo>> = { sigs: [] };
  const sigs: string[] = [];
  const seen = new Set<string>();
  lines.forEach((line, index) => {
    const lineNumber = index + 1;
    const { name, value } = splitLine(line, lineNumber);
    if (name === 'Sig') {
      const problem = signatureProblem(value);
      if (problem !== undefined) throw lineError(lineNumber, `Sig ${problem}`);
      sigs.push(value);
      return;
    }
    const parse = Object.hasOwn(FIELD_PARSERS, name) ? FIELD_PARSERS[name] : undefined;
    if (parse === undefined) return; // Nix ignores fields it does not know.
    if (seen.has(name)) throw lineError(lineNumber, `${name} appears more than once`);
    seen.add(name);
    try {
      parse(info, value, storeDir);
    } catch (error) {
      if (!FirnError.is(error)) throw error;
      throw lineError(lineNumber, `${name} ${error.message}`, error);
    }
  });
  return complete(info, sigs);
}

/** Decodes UTF-8 bytes (refusing more than maxBytes or invalid UTF-8) and parses them. */
export function parseNarInfoBytes(bytes: Uint8Array, options: ParseNarInfoOptions = {}): NarInfo {
  const maxBytes = options.maxBytes ?? MAX_NARINFO_BYTES;
  if (bytes.length > maxBytes) throw tooLarge(maxBytes);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (error) {
    throw firnError('FIRN_E_NARINFO_INVALID', 'the narinfo is not valid UTF-8', { cause: error });
  }
  return parseNarInfo(text, options);
}

/** Writes `info` as Nix 2.8 does: fixed field order, hashes as `<algo>:<nix32>`. */
export function serializeNarInfo(info: NarInfo): string {
  const lines: string[] = [`StorePath: ${info.storePath}`, `URL: ${info.url}`];
  lines.push(`Compression: ${info.compression}`);
  if (info.fileHash !== undefined) lines.push(`FileHash: ${formatHash(info.fileHash, 'nix32')}`);
  if (info.fileSize !== undefined) lines.push(`FileSize: ${info.fileSize}`);
  lines.push(`NarHash: ${formatHash(info.narHash, 'nix32')}`);
  lines.push(`NarSize: ${info.narSize}`);
  // Nix 2.8 always writes References, even empty (`References: ` with a trailing space).
  lines.push(`References: ${info.references.join(' ')}`);
  if (info.deriver !== undefined) lines.push(`Deriver: ${info.deriver}`);
  if (info.system !== undefined && info.system !== '') lines.push(`System: ${info.system}`);
  for (const sig of info.sigs) lines.push(`Sig: ${sig}`);
  if (info.ca !== undefined && info.ca !== '') lines.push(`CA: ${info.ca}`);
  for (const line of lines) {
    // A newline inside a value would smuggle extra fields (say a Sig) into the output.
    if (controlCharIndex(line) >= 0) {
      throw firnError(
        'FIRN_E_NARINFO_INVALID',
        `cannot write narinfo: the field ${quoteForMessage(line)} contains a control character`,
      );
    }
  }
  return lines.join('\n') + '\n';
}

function splitLine(line: string, lineNumber: number): { name: string; value: string } {
  const control = line.charAt(controlCharIndex(line));
  if (control !== '') {
    const what =
      control === '\r'
        ? 'a carriage return (CRLF line endings are not allowed)'
        : control === '\0'
          ? 'a NUL byte'
          : `the control character ${JSON.stringify(control)}`;
    throw lineError(lineNumber, `contains ${what}`);
  }
  const colon = line.indexOf(':');
  if (colon <= 0 || line[colon + 1] !== ' ') {
    throw lineError(lineNumber, `${quoteForMessage(line, 80)} is not of the form 'Name: value'`);
  }
  return { name: line.slice(0, colon), value: line.slice(colon + 2) };
}

function complete(info: Mutable<Partial<NarInfo>>, sigs: string[]): NarInfo {
  const { storePath, url, narHash, narSize } = info;
  if (storePath === undefined) throw missing('StorePath');
  if (url === undefined) throw missing('URL');
  if (narHash === undefined) throw missing('NarHash');
  if (narSize === undefined) throw missing('NarSize');
  const result: Mutable<NarInfo> = {
    storePath,
    url,
    compression: info.compression ?? DEFAULT_COMPRESSION,
    narHash,
    narSize,
    references: info.references ?? [],
    sigs,
  };
  if (info.fileHash !== undefined) result.fileHash = info.fileHash;
  if (info.fileSize !== undefined) result.fileSize = info.fileSize;
  if (info.deriver !== undefined) result.deriver = info.deriver;
  if (info.system !== undefined) result.system = info.system;
  if (info.ca !== undefined) result.ca = info.ca;
  return result;
}

const DIGITS = /^[0-9]+$/;

function parseSize(value: string): number {
  if (!DIGITS.test(value)) {
    throw firnError(
      'FIRN_E_NARINFO_INVALID',
      `${quoteForMessage(value, 40)} is not a decimal number`,
    );
  }
  const size = Number(value);
  if (size > Number.MAX_SAFE_INTEGER) {
    throw firnError(
      'FIRN_E_NARINFO_INVALID',
      `${quoteForMessage(value, 40)} is too large (at most 2^53-1)`,
    );
  }
  return size;
}

/** `text:sha256:<digest>` or `fixed:[r:]<algo>:<digest>`, as Nix 2.8's parseContentAddress. */
function checkContentAddress(value: string): void {
  const match = /^(text|fixed):(r:)?([a-z0-9]+):(.*)$/.exec(value);
  if (match === null || (match[1] === 'text' && match[2] !== undefined)) {
    throw firnError(
      'FIRN_E_NARINFO_INVALID',
      `${quoteForMessage(value, 80)} is not a content address ('text:sha256:<hash>' or 'fixed:[r:]<algo>:<hash>')`,
    );
  }
  const algorithm = parseHashAlgorithm(match[3] ?? '');
  if (match[1] === 'text' && algorithm !== 'sha256') {
    throw firnError('FIRN_E_NARINFO_INVALID', `text content address uses ${algorithm}, not sha256`);
  }
  parseDigest(match[4] ?? '', algorithm);
}

function lineError(lineNumber: number, message: string, cause?: FirnError): FirnError {
  return firnError('FIRN_E_NARINFO_INVALID', `line ${lineNumber}: ${message}`, {
    ...(cause === undefined ? {} : { cause }),
    details: { line: lineNumber },
  });
}

function missing(field: string): FirnError {
  return firnError('FIRN_E_NARINFO_INVALID', `the narinfo has no ${field} line`, {
    hint: 'a narinfo needs StorePath, URL, NarHash and NarSize',
    details: { field },
  });
}

function tooLarge(maxBytes: number): FirnError {
  return firnError('FIRN_E_INPUT_TOO_LARGE', `the narinfo is larger than ${maxBytes} bytes`, {
    details: { maxBytes },
  });
}

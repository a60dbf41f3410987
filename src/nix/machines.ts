/**
 * Nix's machines file (`/etc/nix/machines`, or the `builders` setting): one remote builder per
 * entry, entries separated by newlines or `;`, fields separated by whitespace:
 *
 *   URI  SYSTEMS  SSH-KEY  MAX-JOBS  SPEED-FACTOR  SUPPORTED-FEATURES  MANDATORY-FEATURES  HOST-KEY
 *
 * Read exactly as Nix 2.8's src/libstore/machines.cc reads it: a missing field, or `-`, takes
 * the default; `#` starts a comment that runs to the end of the entry (a `;` ends it too);
 * fields after the eighth are ignored; `@FILE` includes another machines file.
 */
import { firnError } from '../errors.ts';
import { quoteForMessage } from './store-path.ts';

export interface Machine {
  /** Store URI; a bare host name is read as `ssh://host`, as Nix does. */
  readonly uri: string;
  /** Systems it builds for; defaults to the local system. */
  readonly systems: readonly string[];
  readonly sshKey?: string;
  readonly maxJobs: number;
  /** At least 1 (Nix raises 0 to 1). */
  readonly speedFactor: number;
  /** Sorted and deduplicated, as Nix keeps them in a std::set. */
  readonly supportedFeatures: readonly string[];
  readonly mandatoryFeatures: readonly string[];
  /** Base64 of the host's public key line, for `ssh-ng` and `ssh` stores. */
  readonly publicHostKey?: string;
}

export interface ParseMachinesOptions {
  /** The system a `-` systems field stands for; defaults to the system firn runs on. */
  readonly thisSystem?: string;
  /** Named in error messages, e.g. `/etc/nix/machines`. */
  readonly source?: string;
  /**
   * Reads the file an `@FILE` entry names; returns undefined when it does not exist (Nix then
   * skips it). Without this, `@FILE` entries are an error.
   */
  readonly readInclude?: (path: string) => string | undefined;
}

const MAX_INCLUDE_DEPTH = 16;
const MAX_UNSIGNED = 0xffffffff;
const WHITESPACE = /[ \t\n\r]+/;
const BASE64_CHARS = /^[A-Za-z0-9+/]*$/;

/** The Nix system name of this machine, e.g. `x86_64-linux`, `aarch64-darwin`. */
export function currentNixSystem(): string {
  const arch: Readonly<Record<string, string>> = {
    x64: 'x86_64',
    arm64: 'aarch64',
    ia32: 'i686',
    arm: 'armv7l',
    riscv64: 'riscv64',
    ppc64: 'powerpc64le',
  };
  return `${arch[process.arch] ?? process.arch}-${process.platform}`;
}

/** Parses a machines file or `builders` value; throws FIRN_E_MACHINES_INVALID naming the line. */
export function parseMachines(text: string, options: ParseMachinesOptions = {}): Machine[] {
  return parseWithDepth(text, options, 0);
}

function parseWithDepth(text: string, options: ParseMachinesOptions, depth: number): Machine[] {
  const machines: Machine[] = [];
  for (const entry of entries(text)) {
    const at = { source: options.source, line: entry.line, text: entry.text };
    if (entry.text.startsWith('@')) {
      machines.push(...include(entry.text.slice(1).trim(), options, depth, at));
    } else {
      machines.push(parseEntry(entry.text, options.thisSystem ?? currentNixSystem(), at));
    }
  }
  return machines;
}

interface Entry {
  readonly line: number;
  readonly text: string;
}

/** Nix splits on newlines and `;`, trims, then cuts each piece at its first `#`. */
function entries(text: string): Entry[] {
  const result: Entry[] = [];
  text.split('\n').forEach((line, index) => {
    for (const piece of line.split(';')) {
      const trimmed = piece.replace(/^[ \t\n\r]+|[ \t\n\r]+$/g, '');
      const hash = trimmed.indexOf('#');
      const entry = hash < 0 ? trimmed : trimmed.slice(0, hash);
      if (entry !== '') result.push({ line: index + 1, text: entry });
    }
  });
  return result;
}

interface Location {
  readonly source: string | undefined;
  readonly line: number;
  readonly text: string;
}

function machinesError(at: Location, message: string): Error {
  const where = `${at.source === undefined ? '' : `${at.source}, `}line ${at.line}`;
  return firnError(
    'FIRN_E_MACHINES_INVALID',
    `machines ${where}: ${message} in ${quoteForMessage(at.text.trim(), 120)}`,
    {
      details: { source: at.source, line: at.line },
      hint: 'each entry is: URI SYSTEMS SSH-KEY MAX-JOBS SPEED-FACTOR SUPPORTED-FEATURES MANDATORY-FEATURES HOST-KEY (- for a default)',
    },
  );
}

function include(
  path: string,
  options: ParseMachinesOptions,
  depth: number,
  at: Location,
): Machine[] {
  if (options.readInclude === undefined) {
    throw machinesError(at, `cannot include ${quoteForMessage(path)} here`);
  }
  if (depth >= MAX_INCLUDE_DEPTH) {
    throw machinesError(at, `includes nest more than ${MAX_INCLUDE_DEPTH} deep (a loop?)`);
  }
  const text = options.readInclude(path);
  if (text === undefined) return [];
  return parseWithDepth(text, { ...options, source: path }, depth + 1);
}

function parseEntry(text: string, thisSystem: string, at: Location): Machine {
  const fields = text.split(WHITESPACE).filter((field) => field !== '');
  const field = (index: number): string | undefined => {
    const value = fields[index];
    return value === undefined || value === '' || value === '-' ? undefined : value;
  };
  const uri = field(0);
  if (uri === undefined) throw machinesError(at, 'the store URI (first field) is missing');
  const systems = field(1);
  const sshKey = field(2);
  const maxJobs = field(3);
  const speedFactor = field(4);
  const publicHostKey = field(7);
  if (publicHostKey !== undefined) checkBase64(publicHostKey, at);
  return {
    uri: normalizeUri(uri),
    systems: systems === undefined ? [thisSystem] : splitList(systems),
    ...(sshKey === undefined ? {} : { sshKey }),
    maxJobs: maxJobs === undefined ? 1 : parseUnsigned(maxJobs, 'max jobs (field 4)', at),
    speedFactor:
      speedFactor === undefined
        ? 1
        : Math.max(1, parseUnsigned(speedFactor, 'speed factor (field 5)', at)),
    supportedFeatures: featureSet(field(5)),
    mandatoryFeatures: featureSet(field(6)),
    ...(publicHostKey === undefined ? {} : { publicHostKey }),
  };
}

/** Nix's backwards compatibility: a bare host name means `ssh://host`. */
function normalizeUri(uri: string): string {
  const special =
    uri.includes('://') ||
    uri.includes('/') ||
    ['auto', 'daemon', 'local'].includes(uri) ||
    ['auto?', 'daemon?', 'local?', '?'].some((prefix) => uri.startsWith(prefix));
  return special ? uri : `ssh://${uri}`;
}

function splitList(field: string): string[] {
  return field.split(',').filter((item) => item !== '');
}

function featureSet(field: string | undefined): string[] {
  if (field === undefined) return [];
  return [...new Set(splitList(field))].sort(compareAscii);
}

function compareAscii(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** boost::lexical_cast<unsigned int>: decimal digits, an optional `+`, no overflow. */
function parseUnsigned(field: string, what: string, at: Location): number {
  const value = /^\+?[0-9]+$/.test(field) ? Number(field) : NaN;
  if (!(value <= MAX_UNSIGNED)) {
    throw machinesError(
      at,
      `${what} ${quoteForMessage(field)} is not a whole number from 0 to ${MAX_UNSIGNED}`,
    );
  }
  return value;
}

function checkBase64(field: string, at: Location): void {
  if (!isNixBase64(field)) {
    throw machinesError(at, `public host key (field 8) ${quoteForMessage(field)} is not base64`);
  }
}

/** What Nix's base64Decode accepts: alphabet characters up to the first `=`, which ends it. */
function isNixBase64(text: string): boolean {
  const end = text.indexOf('=');
  return BASE64_CHARS.test(end < 0 ? text : text.slice(0, end));
}

// ── writing ────────────────────────────────────────────────────────────────────────────────────

/** One line per machine, all eight fields, `-` for empty ones; parseMachines reads it back equal. */
export function serializeMachines(machines: readonly Machine[]): string {
  return machines.map((machine, index) => serializeMachine(machine, index) + '\n').join('');
}

function serializeMachine(m: Machine, index: number): string {
  const unwritable = (what: string, value: string): Error =>
    firnError(
      'FIRN_E_MACHINES_INVALID',
      `machine ${index + 1} (${quoteForMessage(m.uri)}): ${what} ${quoteForMessage(value)} cannot be written to a machines file`,
      {
        hint: 'fields cannot be empty or "-" or hold whitespace, #, ; or (in lists) commas; the URI cannot start with @',
      },
    );
  const field = (what: string, value: string): string => {
    if (value === '' || value === '-' || /[ \t\n\r#;]/.test(value)) throw unwritable(what, value);
    return value;
  };
  const optional = (what: string, value: string | undefined): string =>
    value === undefined || value === '' ? '-' : field(what, value);
  const list = (what: string, values: readonly string[]): string => {
    for (const value of values) {
      if (value === '' || value.includes(',')) throw unwritable(what, value);
    }
    return values.length === 0 ? '-' : field(what, values.join(','));
  };
  const count = (what: string, value: number): string => {
    if (!Number.isInteger(value) || value < 0 || value > MAX_UNSIGNED) {
      throw unwritable(what, String(value));
    }
    return String(value);
  };
  if (m.uri.startsWith('@')) throw unwritable('URI', m.uri);
  if (m.publicHostKey !== undefined && !isNixBase64(m.publicHostKey)) {
    throw unwritable('public host key', m.publicHostKey);
  }
  return [
    field('URI', m.uri),
    // An empty systems list is written `,`: set, but with no items, as Nix reads it back.
    m.systems.length === 0 ? ',' : list('system', m.systems),
    optional('SSH key', m.sshKey),
    count('max jobs', m.maxJobs),
    count('speed factor', m.speedFactor),
    list('feature', m.supportedFeatures),
    list('feature', m.mandatoryFeatures),
    optional('public host key', m.publicHostKey),
  ].join(' ');
}

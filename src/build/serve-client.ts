/**
 * A client for `nix-store --serve --write` (Nix's "legacy ssh store" protocol, version 2.x),
 * over any child process: `ssh -F cfg host nix-store --serve --write`, or the program run
 * locally in tests. Layouts checked against Nix 2.8.0's server (test/build/serve.test.ts).
 *
 * One connection runs one command at a time (the protocol has no multiplexing), so a builder
 * with N slots gets N connections; each one lives as long as the build does.
 *
 * The build log is the child's stderr (the protocol carries no log frames): `takeLog()` hands
 * out what arrived since the last call, bounded to the tail.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { sleep } from '../concurrency.ts';
import { firnError, type FirnError } from '../errors.ts';
import type { Derivation } from '../nix/derivation.ts';
import { str, strings, u64, WireReader } from './serve-wire.ts';

const SERVE_MAGIC_1 = 0x390c9deb;
const SERVE_MAGIC_2 = 0x5452eecb;
/**
 * 2.6, as Hydra declares: Nix 2.8's server writes builtOutputs to every client (a bug), so a
 * client below 2.6 desyncs; 2.7 would add keepFailed to the build options, which we never want.
 */
const CLIENT_VERSION = 0x206;

const CMD_QUERY_VALID_PATHS = 1;
const CMD_BUILD_DERIVATION = 8;

/** The build log kept per connection: the whole log of most builds, the end of huge ones. */
const LOG_TAIL_BYTES = 1024 * 1024;

/** BuildResult status codes (build-result.hh). */
export const BUILD_STATUS = [
  'Built',
  'Substituted',
  'AlreadyValid',
  'PermanentFailure',
  'InputRejected',
  'OutputRejected',
  'TransientFailure',
  'CachedFailure',
  'TimedOut',
  'MiscFailure',
  'DependencyFailed',
  'LogLimitExceeded',
  'NotDeterministic',
  'ResolvesToAlreadyValid',
  'NoSubstituters',
] as const;

export interface BuildResult {
  readonly status: number;
  readonly statusName: string;
  /** ANSI colour codes removed. */
  readonly errorMsg: string;
  readonly timesBuilt: number;
  /** Builder-side clock, seconds since the epoch. */
  readonly startTime: number;
  readonly stopTime: number;
}

export function buildSucceeded(result: BuildResult): boolean {
  return result.status <= 2 || result.status === 13;
}

export interface BuildOptions {
  /** Seconds without output before the build is killed; 0 = no limit. */
  readonly maxSilentTime?: number;
  readonly buildTimeout?: number;
}

export class ServeConnection {
  readonly serverVersion: number;
  private readonly child: ChildProcessByStdio<Writable, Readable, Readable>;
  private readonly reader: WireReader;
  private readonly label: string;
  private log = '';
  /** Log characters received so far, to tell when stderr has gone quiet. */
  private logSeen = 0;
  private busy = false;
  private exited = false;

  private constructor(
    child: ChildProcessByStdio<Writable, Readable, Readable>,
    reader: WireReader,
    serverVersion: number,
    label: string,
  ) {
    this.child = child;
    this.reader = reader;
    this.serverVersion = serverVersion;
    this.label = label;
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      this.log = (this.log + chunk).slice(-LOG_TAIL_BYTES);
      this.logSeen += chunk.length;
    });
    child.once('exit', () => (this.exited = true));
  }

  /** Starts `argv` and does the handshake; `label` names the builder in errors. */
  static async open(
    argv: readonly string[],
    options: {
      readonly env?: NodeJS.ProcessEnv;
      readonly label: string;
      /** Aborting kills the child: the open fails, nothing is left running. */
      readonly signal?: AbortSignal;
      /** Called once the child is gone (also when the open fails): e.g. to free its ssh session. */
      readonly onClose?: () => void;
    },
  ): Promise<ServeConnection> {
    const [command, ...args] = argv;
    if (command === undefined) throw new Error('ServeConnection.open: empty argv');
    const child = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
    });
    const onClose = options.onClose;
    if (onClose !== undefined) {
      let called = false;
      const once = (): void => {
        if (called) return;
        called = true;
        onClose();
      };
      child.once('close', once);
      child.once('error', once);
    }
    // Kept for the whole life of the connection: what the peer said last explains a hang-up.
    let recent = '';
    child.stderr.setEncoding('utf8');
    const collect = (chunk: string): void => {
      recent = (recent + chunk).slice(-4096);
    };
    child.stderr.on('data', collect);
    child.stdin.on('error', () => {
      // A dead child surfaces as the end of stdout, which the reader reports.
    });
    // Every 'error' is handled (an unhandled one would end the process); the first one before
    // the handshake completes fails the open, later ones show up as the connection closing.
    const spawnFailed = new Promise<never>((_, reject) => {
      child.on('error', (error) => {
        reject(lost(options.label, `cannot run ${command}: ${error.message}`));
      });
    });
    spawnFailed.catch(() => undefined);
    const onAbort = (): void => {
      child.kill('SIGKILL');
    };
    if (options.signal?.aborted === true) onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const reader = new WireReader(child.stdout);
    // 'close' comes after the exit and after stderr is drained, so the message has its end.
    child.once('close', () => {
      reader.fail(
        lost(
          options.label,
          `the connection closed${recent.trim() === '' ? '' : `: ${lastLines(recent)}`}`,
        ),
      );
    });
    child.stdin.write(Buffer.concat([u64(SERVE_MAGIC_1), u64(CLIENT_VERSION)]));
    try {
      const handshake = (async () => {
        const magic = await reader.u64();
        if (magic !== SERVE_MAGIC_2) {
          throw lost(options.label, `not a nix-store --serve peer (magic 0x${magic.toString(16)})`);
        }
        return reader.u64();
      })();
      const version = await Promise.race([handshake, spawnFailed]);
      if (version >> 8 !== 2 || (version & 0xff) < 6) {
        throw lost(
          options.label,
          `unsupported serve protocol version ${version >> 8}.${version & 0xff} (Nix 2.4 or newer is needed)`,
        );
      }
      return new ServeConnection(child, reader, version, options.label);
    } catch (error) {
      child.kill('SIGKILL');
      throw error;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  get alive(): boolean {
    return !this.exited;
  }

  /** The paths of `paths` valid on the builder; with `substitute`, it first substitutes them. */
  async queryValidPaths(
    paths: readonly string[],
    options: { readonly lock?: boolean; readonly substitute?: boolean } = {},
  ): Promise<string[]> {
    return this.exclusive(async () => {
      this.send(
        u64(CMD_QUERY_VALID_PATHS),
        u64(options.lock === true ? 1 : 0),
        u64(options.substitute === true ? 1 : 0),
        strings(paths),
      );
      return this.reader.strings();
    });
  }

  /** Builds `drv` (sent inline; the .drv file need not exist there) whose inputs are valid. */
  async buildDerivation(
    drvPath: string,
    drv: Derivation,
    options: BuildOptions = {},
  ): Promise<BuildResult> {
    return this.exclusive(async () => {
      this.send(
        u64(CMD_BUILD_DERIVATION),
        str(drvPath),
        basicDerivation(drv),
        u64(options.maxSilentTime ?? 0),
        u64(options.buildTimeout ?? 0),
        u64(0), // maxLogSize: unlimited
        u64(0), // buildRepeat: extra rounds, none
        u64(0), // enforceDeterminism
      );
      const status = await this.reader.u64();
      const errorMsg = stripAnsi(await this.reader.string());
      const timesBuilt = await this.reader.u64();
      await this.reader.bool(); // isNonDeterministic
      const startTime = await this.reader.u64();
      const stopTime = await this.reader.u64();
      const outputs = await this.reader.u64();
      for (let i = 0; i < outputs * 2; i++) await this.reader.string();
      return {
        status,
        statusName: BUILD_STATUS[status] ?? `status ${status}`,
        errorMsg,
        timesBuilt,
        startTime,
        stopTime,
      };
    });
  }

  /**
   * The build log since the last call, once stderr has been quiet for `quietMs` (waiting at most
   * `maxMs`). The log and the result travel on two pipes (stderr, stdout), so a build's last
   * lines may be read after its result: a failed build's log would lose its end, the part
   * that says why.
   */
  async takeSettledLog(quietMs = 30, maxMs = 500): Promise<string> {
    const deadline = performance.now() + maxMs;
    for (;;) {
      const seen = this.logSeen;
      await sleep(quietMs);
      if (this.logSeen === seen || this.exited || performance.now() >= deadline) break;
    }
    return this.takeLog();
  }

  /** The build log (the peer's stderr) since the last call. */
  takeLog(): string {
    const log = this.log;
    this.log = '';
    return log;
  }

  close(): void {
    if (this.exited) return;
    this.exited = true;
    this.child.stdin.end();
    this.child.kill('SIGTERM');
  }

  /** SIGKILL: for a cancelled build (ssh's exit makes the remote nix-store stop). */
  kill(): void {
    if (this.exited) return;
    this.exited = true;
    this.child.kill('SIGKILL');
  }

  private send(...parts: Buffer[]): void {
    this.child.stdin.write(Buffer.concat(parts));
  }

  private async exclusive<T>(body: () => Promise<T>): Promise<T> {
    if (this.busy) throw new Error(`serve connection to ${this.label} is busy`);
    if (this.exited) throw lost(this.label, 'the connection is closed');
    this.busy = true;
    try {
      return await body();
    } finally {
      this.busy = false;
    }
  }
}

/** BasicDerivation as derivations.cc writeDerivation puts it on the wire. */
export function basicDerivation(drv: Derivation): Buffer {
  const outputs = [...drv.outputs.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const parts: Buffer[] = [u64(outputs.length)];
  for (const [name, output] of outputs) {
    parts.push(str(name), str(output.path), str(output.hashAlgo), str(output.hash));
  }
  parts.push(strings([...drv.inputSrcs].sort()), str(drv.system), str(drv.builder));
  parts.push(strings(drv.args), u64(drv.env.size));
  for (const [key, value] of drv.env) parts.push(str(key), str(value));
  return Buffer.concat(parts);
}

export function stripAnsi(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
}

function lastLines(text: string): string {
  return stripAnsi(text).trim().split('\n').slice(-4).join('\n');
}

function lost(label: string, reason: string): FirnError {
  return firnError('FIRN_E_BUILDER_PROTOCOL', `builder ${label}: ${reason}`, {
    details: { builder: label },
  });
}

/**
 * One multiplexed OpenSSH connection (ControlMaster) per builder, shared by every session the
 * coordinator opens there: serve connections, pushes, source copies. A session over it costs a
 * channel open (~10 ms on the test fleet) instead of a handshake (~200 ms, more on a busy
 * machine), and every build pays for a push session.
 *
 * - The master is `ssh -M -N -f` with ControlPersist: the foreground ssh exits once the master
 *   is authenticated and listening (so its exit says "ready"), and the master exits by itself
 *   after PERSIST seconds without sessions — the safety net if the coordinator is killed
 *   outright. close() sends `-O exit`, which ends it and every session on it at once.
 * - sshd allows MaxSessions (default 10) sessions per connection: each master carries at most
 *   `maxSessions` (default 8), and another master is opened when every one is full.
 * - Control sockets live in the coordinator's private (0700) temp dir; a path too long for a
 *   Unix socket turns multiplexing off (plain sessions) rather than failing.
 * - A master that died (its builder went down) has removed its socket: the next session starts
 *   a new one. A master that cannot start is the caller's error (the builder is unreachable).
 * - Host keys stay checked: the master runs with the target's options (pinned known_hosts,
 *   StrictHostKeyChecking), and sessions only ride on it.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { firnError } from '../errors.ts';
import { run } from '../process/run.ts';
import type { SshTarget } from './ssh.ts';

export interface SshSession {
  /** `ssh` arguments up to and including the destination; append `--` and the command. */
  readonly args: readonly string[];
  /** The same options as one NIX_SSHOPTS string, for `nix copy --to ssh://…`. */
  readonly nixSshOpts: string;
  /** Gives the session's slot back (idempotent); call it when the ssh process has exited. */
  release(): void;
}

export interface SshMuxOptions {
  /** A private directory (mode 0700) for the control sockets. */
  readonly dir: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Sessions per master connection (at most sshd's MaxSessions; default 8). */
  readonly maxSessions?: number;
  /** Seconds a master with no sessions lives on (ControlPersist). */
  readonly persistSeconds?: number;
}

interface Master {
  readonly path: string;
  sessions: number;
  up: boolean;
  failed: boolean;
  ready: Promise<void>;
}

/**
 * sshd's default MaxSessions is 10; a session whose client has exited can hold its slot there a
 * moment longer (the remote command still ending), so two are kept spare.
 */
const DEFAULT_MAX_SESSIONS = 8;

/** ssh appends a 17-character random suffix while binding; sun_path holds 107 bytes. */
const MAX_SOCKET_PATH = 88;

let serial = 0;

export class SshMux {
  readonly #target: SshTarget;
  readonly #options: SshMuxOptions;
  readonly #maxSessions: number;
  /** Aborted by close(): masters still authenticating are killed. */
  readonly #closing = new AbortController();
  #masters: Master[] = [];

  constructor(target: SshTarget, options: SshMuxOptions) {
    this.#target = target;
    this.#options = options;
    this.#maxSessions = Math.max(1, options.maxSessions ?? DEFAULT_MAX_SESSIONS);
  }

  /** Starts the first master ahead of the first session; its failure is met by that session. */
  warm(): void {
    if (this.#masters.length > 0 || this.#closing.signal.aborted) return;
    this.#start()?.ready.catch(() => undefined);
  }

  /** A session slot on a live master (waiting for it to be up), or a plain session. */
  async session(): Promise<SshSession> {
    if (this.#closing.signal.aborted) {
      throw lost(this.#target.name, 'the coordinator is shutting down');
    }
    const master = this.#pick();
    if (master === undefined) return this.#plain();
    master.sessions++;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      master.sessions--;
    };
    try {
      await master.ready;
    } catch (error) {
      release();
      throw error;
    }
    const options = [
      ...this.#target.options,
      '-o',
      `ControlPath=${master.path}`,
      '-o',
      'ControlMaster=no',
    ];
    return {
      args: [...options, this.#target.destination],
      nixSshOpts: options.join(' '),
      release,
    };
  }

  /**
   * Ends every master (`ssh -O exit`) and with it every session on it. A master still
   * authenticating is killed; one that got as far as its socket (the kill came as it went to
   * the background) is told to exit too.
   */
  async close(): Promise<void> {
    this.#closing.abort();
    const masters = this.#masters;
    this.#masters = [];
    await Promise.all(
      masters.map(async (master) => {
        if (master.up) {
          await this.#exit(master);
          return;
        }
        await master.ready.catch(() => undefined);
        if (existsSync(master.path)) await this.#exit(master);
      }),
    );
  }

  #pick(): Master | undefined {
    // A master that died (socket gone) or never came up is replaced.
    this.#masters = this.#masters.filter(
      (master) => !master.failed && (!master.up || existsSync(master.path)),
    );
    return this.#masters.find((master) => master.sessions < this.#maxSessions) ?? this.#start();
  }

  #start(): Master | undefined {
    const path = join(this.#options.dir, `mux${serial++}`);
    if (path.length > MAX_SOCKET_PATH) return undefined;
    const master: Master = {
      path,
      sessions: 0,
      up: false,
      failed: false,
      ready: Promise.resolve(),
    };
    const args = [
      ...this.#target.options,
      '-o',
      'ControlMaster=yes',
      '-o',
      `ControlPath=${path}`,
      '-o',
      `ControlPersist=${this.#options.persistSeconds ?? 60}`,
      '-N',
      '-f',
      this.#target.destination,
    ];
    master.ready = run('ssh', args, {
      env: this.#options.env ?? process.env,
      signal: this.#closing.signal,
    }).then(
      (result) => {
        if (result.code !== 0) {
          master.failed = true;
          throw lost(this.#target.name, `ssh failed: ${lastLines(result.stderr)}`);
        }
        if (this.#closing.signal.aborted) {
          // close() came while it started: close() ends it once this settles.
          throw lost(this.#target.name, 'the coordinator is shutting down');
        }
        master.up = true;
      },
      (error: unknown) => {
        master.failed = true;
        throw lost(
          this.#target.name,
          `ssh failed: ${error instanceof Error ? error.message : String(error)}`,
        );
      },
    );
    this.#masters.push(master);
    return master;
  }

  async #exit(master: Master): Promise<void> {
    master.up = false;
    await run(
      'ssh',
      [
        ...this.#target.options,
        '-o',
        `ControlPath=${master.path}`,
        '-O',
        'exit',
        this.#target.destination,
      ],
      { env: this.#options.env ?? process.env },
    ).catch(() => undefined);
  }

  #plain(): SshSession {
    return {
      args: this.#target.args,
      nixSshOpts: this.#target.nixSshOpts,
      release: () => undefined,
    };
  }
}

function lastLines(text: string): string {
  const lines = text.trim().split('\n').slice(-3).join('\n');
  return lines === '' ? '(no message)' : lines;
}

function lost(builder: string, reason: string): Error {
  return firnError('FIRN_E_BUILDER_PROTOCOL', `builder ${builder}: ${reason}`, {
    details: { builder },
  });
}

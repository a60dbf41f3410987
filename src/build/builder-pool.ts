/**
 * The real executor: builds on fleet builders over `nix-store --serve --write`.
 *
 * Every ssh session to a builder rides on one multiplexed connection (src/build/ssh-mux.ts), so
 * a session costs a channel open, not a handshake. For each derivation, on serve connections of
 * the chosen builder (kept open and reused):
 * 1. QueryValidPaths(substitute) for its inputs: the builder substitutes from the cache what
 *    it lacks — inputs never pass through the coordinator. Skipped when the builder is known to
 *    have every input (it built them, or an earlier query or copy put them there). This runs on
 *    a "fetch" connection that never builds: Nix 2.8's serve loop turns `useSubstitutes` off for
 *    the whole process at its first BuildDerivation, after which QueryValidPaths(substitute)
 *    silently substitutes nothing (found by test/build/build.test.ts). So each builder has up
 *    to maxJobs connections of each kind.
 * 2. Inputs still missing that only the coordinator has (sources such as builtins.toFile) are
 *    copied once per builder with `nix copy --to ssh://…`.
 * 3. BuildDerivation with the derivation inline (the .drv closure is not copied). Then the
 *    outputs are valid on the builder: the scheduler is told, so dependents can start there.
 * 4. The builder pushes the outputs to the cache itself (`nix copy --to <cache>` run there over
 *    ssh, with its own credentials), after the pushes of the inputs it built; only then is the
 *    derivation done.
 *
 * A connection that breaks is reported as a lost builder (the scheduler requeues); a build that
 * fails is reported with the tail of its log.
 */
import { sleep } from '../concurrency.ts';
import { run } from '../process/run.ts';
import type { BuildGraph, DrvNode } from './graph.ts';
import { inputPaths } from './graph.ts';
import type { BuilderSpec, Executor, JobSpec, Outcome } from './scheduler.ts';
import { buildSucceeded, ServeConnection } from './serve-client.ts';
import { quoteWord, type SshTarget } from './ssh.ts';
import { SshMux, type SshSession } from './ssh-mux.ts';
import { trace } from './trace.ts';

export interface PoolOptions {
  /** By builder name. */
  readonly targets: ReadonlyMap<string, SshTarget>;
  /** Where builders push outputs, as they reach it; undefined = no push. */
  readonly pushUrl: string | undefined;
  /** Root of the coordinator's chroot store, for copying sources (`--store DIR`). */
  readonly storeRoot?: string | undefined;
  readonly env?: NodeJS.ProcessEnv;
  /** A build printing nothing for this long is killed (seconds; 0 = never). */
  readonly maxSilentTime?: number;
  /** A private (0700) directory for ssh control sockets; undefined = one ssh connection per session. */
  readonly controlDir?: string | undefined;
  /** Sessions per multiplexed ssh connection (at most sshd's MaxSessions; default 8). */
  readonly maxSessions?: number;
}

type Kind = 'fetch' | 'build';

export class BuilderPool implements Executor {
  readonly #options: PoolOptions;
  #graph: BuildGraph | undefined;
  /** Aborted by close(): connections still opening are killed. */
  readonly #closing = new AbortController();
  /** builder → its multiplexed ssh connection(s). */
  readonly #mux = new Map<string, SshMux>();
  /** `builder/kind` → connections not in use. */
  readonly #idle = new Map<string, ServeConnection[]>();
  /** `builder/kind` → connections opened ahead of need and not yet taken. */
  readonly #opening = new Map<string, Promise<ServeConnection>[]>();
  readonly #open = new Set<ServeConnection>();
  /** builder → path → the copy that put it there (each source is copied once per builder). */
  readonly #copies = new Map<string, Map<string, Promise<void>>>();
  /** builder → its first fetch, which later fetches wait for. */
  readonly #warm = new Map<string, Promise<unknown>>();
  /** builder → store paths known to be valid there (built, queried or copied in this run). */
  readonly #valid = new Map<string, Set<string>>();
  /** `builder drvPath` → the push of its outputs from that builder. */
  readonly #pushes = new Map<string, Promise<unknown>>();

  constructor(options: PoolOptions) {
    this.#options = options;
  }

  async execute(
    job: JobSpec,
    builder: BuilderSpec,
    signal: AbortSignal,
    onOutputsValid?: () => void,
  ): Promise<Outcome> {
    const node = this.#graph?.nodes.get(job.drvPath);
    if (node === undefined) throw new Error(`BuilderPool: ${job.drvPath} is not in the graph`);
    const target = this.#target(builder.name);
    const id = `${node.name}@${builder.name}`;
    trace('exec', id);
    const inputs = inputPaths(this.#requireGraph(), node);
    const known = this.#knownValid(target.name);
    const warm = this.#warm.get(target.name);
    if (warm === undefined || !inputs.every((path) => known.has(path))) {
      const fetched = await this.#fetch(node, inputs, target, signal);
      trace('fetched', id);
      if (fetched !== undefined) return fetched;
    } else {
      // Nothing to fetch; still, nothing of Nix's runs there before the first fetch is over.
      await warm.catch(() => undefined);
    }
    const outcome = await this.#withConnection(target, 'build', signal, (connection) => {
      trace('build-start', id);
      return this.#build(node, inputs, connection);
    });
    trace('build-end', id);
    if (outcome.kind !== 'built') return outcome;
    const outputs = [...node.outputs.values()].filter((path) => path !== '');
    for (const path of outputs) known.add(path);
    onOutputsValid?.();
    const key = `${target.name} ${node.drvPath}`;
    const push = this.#push(node, outputs, target, signal);
    this.#pushes.set(key, push);
    try {
      const pushed = await push;
      trace('pushed', id);
      return pushed;
    } finally {
      if (this.#pushes.get(key) === push) this.#pushes.delete(key);
    }
  }

  /** The graph the jobs come from; set before the first execute. */
  useGraph(graph: BuildGraph): void {
    this.#graph = graph;
  }

  /**
   * Opens each named builder's ssh connection, then a fetch and a build connection over it, in
   * the background, so the handshakes overlap evaluation instead of delaying the first builds.
   * Failures are ignored here: the first real build on that builder meets them and reports the
   * builder lost.
   */
  prewarm(names: readonly string[]): void {
    for (const name of names) {
      const target = this.#target(name);
      this.#muxOf(target)?.warm();
      for (const kind of ['fetch', 'build'] as const) {
        const key = `${name}/${kind}`;
        const opening = this.#openConnection(target);
        const list = this.#opening.get(key) ?? [];
        list.push(opening);
        this.#opening.set(key, list);
        const untake = (): boolean => {
          const pending = this.#opening.get(key) ?? [];
          if (!pending.includes(opening)) return false;
          this.#opening.set(
            key,
            pending.filter((other) => other !== opening),
          );
          return true;
        };
        opening.then(
          (connection) => {
            // Not taken by a build while it opened: it waits in the idle list.
            if (untake()) this.#release(key, connection);
          },
          () => untake(),
        );
      }
    }
  }

  /** Closes every connection (ssh exits, and with it the remote nix-store), then the masters. */
  async close(): Promise<void> {
    this.#closing.abort();
    for (const connection of this.#open) connection.close();
    this.#open.clear();
    this.#idle.clear();
    this.#opening.clear();
    await Promise.all([...this.#mux.values()].map((mux) => mux.close()));
  }

  /**
   * Runs `body` on an idle (or new) connection of that kind and returns it to the pool; after
   * an exception the connection may be mid-frame, so it is killed instead. An abort kills it too
   * (ssh's exit stops the remote nix-store and its build).
   */
  async #withConnection<T>(
    target: SshTarget,
    kind: Kind,
    signal: AbortSignal,
    body: (connection: ServeConnection) => Promise<T>,
  ): Promise<T | Outcome> {
    if (signal.aborted) return CANCELLED;
    const connection = await this.#connection(target, kind);
    const onAbort = (): void => {
      connection.kill();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      return await body(connection);
    } catch (error) {
      connection.kill();
      // Read again: the abort may have come while body ran (TypeScript cannot know that).
      if (isAborted(signal)) return CANCELLED;
      throw error;
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.#release(`${target.name}/${kind}`, connection);
    }
  }

  /**
   * The fetch step, with two defences against Nix 2.8 races between its own processes on one
   * machine (seen on the test fleet): the first fetch on a builder runs alone, because
   * concurrent first uses of the narinfo disk cache fail with "constraint failed"; and a fetch
   * whose peer died of an SQLite error ("database is busy") is retried once on a new
   * connection. Asking which paths are valid, and substituting them, is idempotent.
   */
  async #fetch(
    node: DrvNode,
    inputs: readonly string[],
    target: SshTarget,
    signal: AbortSignal,
  ): Promise<Outcome | undefined> {
    const attempt = (): Promise<Outcome | undefined> =>
      this.#withConnection(target, 'fetch', signal, (connection) =>
        this.#fetchInputs(node, inputs, target, connection, signal),
      );
    const retrying = async (): Promise<Outcome | undefined> => {
      try {
        return await attempt();
      } catch (error) {
        if (!(error instanceof Error) || !error.message.includes('SQLite')) throw error;
        return attempt();
      }
    };
    const warm = this.#warm.get(target.name);
    if (warm !== undefined) {
      await warm.catch(() => undefined);
      return retrying();
    }
    const first = retrying();
    this.#warm.set(target.name, first);
    return first;
  }

  /** Makes the inputs valid on the builder; an Outcome when that cannot be done. */
  async #fetchInputs(
    node: DrvNode,
    inputs: readonly string[],
    target: SshTarget,
    connection: ServeConnection,
    signal: AbortSignal,
  ): Promise<Outcome | undefined> {
    const known = this.#knownValid(target.name);
    const valid = new Set(
      await connection.queryValidPaths(inputs, { lock: true, substitute: true }),
    );
    for (const path of valid) known.add(path);
    const missing = inputs.filter((path) => !valid.has(path));
    trace('queried', `${node.name}@${target.name} missing=${missing.length}`);
    const sources = new Set(node.inputSrcs);
    const notSources = missing.filter((path) => !sources.has(path));
    if (notSources.length > 0) {
      return {
        kind: 'failed',
        message: `inputs are neither on ${target.name} nor substitutable from the cache: ${notSources.join(', ')}`,
        log: '',
      };
    }
    if (missing.length > 0) {
      await this.#copySources(target, missing, signal);
      for (const path of missing) known.add(path);
    }
    return undefined;
  }

  async #build(
    node: DrvNode,
    inputs: readonly string[],
    connection: ServeConnection,
  ): Promise<Outcome> {
    connection.takeLog();
    const result = await connection.buildDerivation(
      node.drvPath,
      { ...node.drv, inputSrcs: inputs },
      { maxSilentTime: this.#options.maxSilentTime ?? 0 },
    );
    if (buildSucceeded(result)) {
      connection.takeLog();
      return { kind: 'built' };
    }
    return {
      kind: 'failed',
      message: `${result.statusName}: ${result.errorMsg.trim()}`,
      log: await connection.takeSettledLog(),
    };
  }

  /**
   * The builder uploads the outputs. Pushes of inputs built on the same builder go first, so a
   * closure is never uploaded twice at once (nix copy sends what the cache lacks); how they
   * ended is the scheduler's business.
   */
  async #push(
    node: DrvNode,
    outputs: readonly string[],
    target: SshTarget,
    signal: AbortSignal,
  ): Promise<Outcome> {
    const url = this.#options.pushUrl;
    if (url === undefined) return { kind: 'built' };
    const before = [...node.inputDrvs.keys()]
      .map((input) => this.#pushes.get(`${target.name} ${input}`))
      .filter((push) => push !== undefined);
    if (before.length > 0) await Promise.allSettled(before);
    if (signal.aborted) return CANCELLED;
    const command = [
      'nix',
      '--extra-experimental-features',
      'nix-command',
      'copy',
      '--to',
      withCompression(url),
      ...outputs,
    ]
      .map(quoteWord)
      .join(' ');
    for (let attempt = 1; ; attempt++) {
      let result;
      try {
        result = await this.#withSession(target, (session) =>
          run('ssh', [...session.args, '--', command], {
            signal,
            env: this.#options.env ?? process.env,
          }),
        );
      } catch (error) {
        if (isAborted(signal)) return CANCELLED;
        throw error;
      }
      if (isAborted(signal)) return CANCELLED;
      if (result.code === 255) {
        throw new Error(`ssh to ${target.name} failed while pushing: ${result.stderr.trim()}`);
      }
      if (result.code === 0) return { kind: 'built' };
      // Worth another try: the cache may have been busy, and two `nix copy` runs starting at once
      // on a builder whose narinfo disk cache is new can trip over each other in its SQLite file
      // ("constraint failed"), a Nix 2.8 race.
      if (attempt < PUSH_ATTEMPTS) {
        await sleep(PUSH_RETRY_MS * attempt, signal).catch(() => undefined);
        if (isAborted(signal)) return CANCELLED;
        continue;
      }
      return {
        kind: 'failed',
        message: `built on ${target.name}, but pushing the outputs to ${url} failed ${PUSH_ATTEMPTS} times`,
        log: result.stderr,
      };
    }
  }

  #copySources(target: SshTarget, paths: readonly string[], signal: AbortSignal): Promise<unknown> {
    let copies = this.#copies.get(target.name);
    if (copies === undefined) {
      copies = new Map();
      this.#copies.set(target.name, copies);
    }
    const fresh = paths.filter((path) => !copies.has(path));
    if (fresh.length > 0) {
      const copy = this.#nixCopy(target, fresh, signal);
      for (const path of fresh) copies.set(path, copy);
      // A failed copy is retried by the next build that needs it.
      copy.catch(() => {
        for (const path of fresh) if (copies.get(path) === copy) copies.delete(path);
      });
    }
    return Promise.all(paths.map((path) => copies.get(path) ?? Promise.resolve()));
  }

  async #nixCopy(target: SshTarget, paths: readonly string[], signal: AbortSignal): Promise<void> {
    const store = this.#options.storeRoot;
    const args = [
      '--extra-experimental-features',
      'nix-command',
      'copy',
      '--no-check-sigs',
      ...(store === undefined ? [] : ['--store', store]),
      '--to',
      `ssh://${target.destination}`,
      ...paths,
    ];
    const result = await this.#withSession(target, (session) =>
      run('nix', args, {
        signal,
        env: { ...(this.#options.env ?? process.env), NIX_SSHOPTS: session.nixSshOpts },
      }),
    );
    if (result.code !== 0) {
      throw new Error(
        `copying sources to ${target.name} failed: ${result.stderr.trim().split('\n').slice(-4).join('\n')}`,
      );
    }
  }

  /** Runs `body` with an ssh session of the builder, freeing it when body has ended. */
  async #withSession<T>(target: SshTarget, body: (session: SshSession) => Promise<T>): Promise<T> {
    const session = await this.#session(target);
    try {
      return await body(session);
    } finally {
      session.release();
    }
  }

  #session(target: SshTarget): Promise<SshSession> {
    const mux = this.#muxOf(target);
    if (mux !== undefined) return mux.session();
    return Promise.resolve({
      args: target.args,
      nixSshOpts: target.nixSshOpts,
      release: () => undefined,
    });
  }

  #muxOf(target: SshTarget): SshMux | undefined {
    const dir = this.#options.controlDir;
    if (dir === undefined) return undefined;
    let mux = this.#mux.get(target.name);
    if (mux === undefined) {
      mux = new SshMux(target, {
        dir,
        ...(this.#options.env === undefined ? {} : { env: this.#options.env }),
        ...(this.#options.maxSessions === undefined
          ? {}
          : { maxSessions: this.#options.maxSessions }),
      });
      this.#mux.set(target.name, mux);
    }
    return mux;
  }

  #knownValid(builder: string): Set<string> {
    let known = this.#valid.get(builder);
    if (known === undefined) {
      known = new Set();
      this.#valid.set(builder, known);
    }
    return known;
  }

  #requireGraph(): BuildGraph {
    if (this.#graph === undefined) throw new Error('BuilderPool: useGraph was not called');
    return this.#graph;
  }

  #target(name: string): SshTarget {
    const target = this.#options.targets.get(name);
    if (target === undefined) throw new Error(`BuilderPool: no ssh target for ${name}`);
    return target;
  }

  /** An idle connection, one opened ahead of need, or a new one. */
  async #connection(target: SshTarget, kind: Kind): Promise<ServeConnection> {
    const key = `${target.name}/${kind}`;
    const idle = this.#idle.get(key) ?? [];
    for (let connection = idle.pop(); connection !== undefined; connection = idle.pop()) {
      if (connection.alive) return connection;
      this.#open.delete(connection);
    }
    const opening = this.#opening.get(key)?.shift();
    if (opening !== undefined) {
      const connection = await opening.catch(() => undefined);
      if (connection?.alive === true) return connection;
    }
    return this.#openConnection(target);
  }

  async #openConnection(target: SshTarget): Promise<ServeConnection> {
    trace('connect', target.name);
    const session = await this.#session(target);
    const connection = await ServeConnection.open(
      ['ssh', ...session.args, '--', 'nix-store --serve --write'],
      {
        label: target.name,
        env: this.#options.env ?? process.env,
        signal: this.#closing.signal,
        onClose: () => {
          session.release();
        },
      },
    );
    if (this.#closing.signal.aborted) {
      connection.close();
      throw new Error(`BuilderPool: closed while connecting to ${target.name}`);
    }
    this.#open.add(connection);
    trace('connected', target.name);
    return connection;
  }

  #release(key: string, connection: ServeConnection): void {
    if (!connection.alive) {
      this.#open.delete(connection);
      return;
    }
    const idle = this.#idle.get(key) ?? [];
    idle.push(connection);
    this.#idle.set(key, idle);
  }
}

function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

const CANCELLED: Outcome = { kind: 'failed', message: 'cancelled', log: '' };

/** Pushes of a build's outputs are tried this often, waiting PUSH_RETRY_MS × attempt between. */
const PUSH_ATTEMPTS = 3;
const PUSH_RETRY_MS = 300;

/** Builders upload zstd unless the URL already says how. */
function withCompression(url: string): string {
  if (/[?&]compression=/.test(url)) return url;
  return `${url}${url.includes('?') ? '&' : '?'}compression=zstd`;
}

/**
 * The real executor: builds on fleet builders over `nix-store --serve --write`.
 *
 * For each derivation, on connections of the chosen builder (kept open and reused):
 * 1. QueryValidPaths(substitute) for its inputs: the builder substitutes from the cache what
 *    it lacks — inputs never pass through the coordinator. This runs on a "fetch" connection
 *    that never builds: Nix 2.8's serve loop turns `useSubstitutes` off for the whole process
 *    at its first BuildDerivation, after which QueryValidPaths(substitute) silently substitutes
 *    nothing (found by test/build/build.test.ts). So each builder has up to maxJobs
 *    connections of each kind.
 * 2. Inputs still missing that only the coordinator has (sources such as builtins.toFile) are
 *    copied once per builder with `nix copy --to ssh://…`.
 * 3. BuildDerivation with the derivation inline (the .drv closure is not copied).
 * 4. The builder pushes the outputs to the cache itself (`nix copy --to <cache>` run there over
 *    ssh, with its own credentials); only then is the derivation done.
 *
 * A connection that breaks is reported as a lost builder (the scheduler requeues); a build that
 * fails is reported with the tail of its log.
 */
import { run } from '../process/run.ts';
import type { BuildGraph, DrvNode } from './graph.ts';
import { inputPaths } from './graph.ts';
import type { BuilderSpec, Executor, JobSpec, Outcome } from './scheduler.ts';
import { buildSucceeded, ServeConnection } from './serve-client.ts';
import { quoteWord, type SshTarget } from './ssh.ts';

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
}

export class BuilderPool implements Executor {
  readonly #options: PoolOptions;
  #graph: BuildGraph | undefined;
  /** Aborted by close(): connections still opening are killed. */
  readonly #closing = new AbortController();
  /** `builder/kind` → connections not in use. */
  readonly #idle = new Map<string, ServeConnection[]>();
  readonly #open = new Set<ServeConnection>();
  /** builder → path → the copy that put it there (each source is copied once per builder). */
  readonly #copies = new Map<string, Map<string, Promise<void>>>();
  /** builder → its first fetch, which later fetches wait for. */
  readonly #warm = new Map<string, Promise<unknown>>();

  constructor(options: PoolOptions) {
    this.#options = options;
  }

  async execute(job: JobSpec, builder: BuilderSpec, signal: AbortSignal): Promise<Outcome> {
    const node = this.#graph?.nodes.get(job.drvPath);
    if (node === undefined) throw new Error(`BuilderPool: ${job.drvPath} is not in the graph`);
    const target = this.#target(builder.name);
    const fetched = await this.#fetch(node, target, signal);
    if (fetched !== undefined) return fetched;
    const outcome = await this.#withConnection(target, 'build', signal, (connection) =>
      this.#build(node, connection),
    );
    if (outcome.kind !== 'built') return outcome;
    return this.#push(node, target, signal);
  }

  /**
   * Runs `body` on an idle (or new) connection of that kind and returns it to the pool; after
   * an exception the connection may be mid-frame, so it is killed instead. An abort kills it too
   * (ssh's exit stops the remote nix-store and its build).
   */
  async #withConnection<T>(
    target: SshTarget,
    kind: 'fetch' | 'build',
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

  /** The graph the jobs come from; set before the first execute. */
  useGraph(graph: BuildGraph): void {
    this.#graph = graph;
  }

  /**
   * Opens a fetch and a build connection to each named builder in the background, so the ssh
   * handshakes overlap evaluation instead of delaying the first builds. Failures are ignored
   * here: the first real build on that builder meets them and reports the builder lost.
   */
  prewarm(names: readonly string[]): void {
    for (const name of names) {
      const target = this.#target(name);
      for (const kind of ['fetch', 'build'] as const) {
        this.#connection(target, kind).then(
          (connection) => {
            this.#release(`${name}/${kind}`, connection);
          },
          () => undefined,
        );
      }
    }
  }

  /** Closes every connection (ssh exits, and with it the remote nix-store). */
  close(): void {
    this.#closing.abort();
    for (const connection of this.#open) connection.close();
    this.#open.clear();
    this.#idle.clear();
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
    target: SshTarget,
    signal: AbortSignal,
  ): Promise<Outcome | undefined> {
    const attempt = (): Promise<Outcome | undefined> =>
      this.#withConnection(target, 'fetch', signal, (connection) =>
        this.#fetchInputs(node, target, connection, signal),
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
    target: SshTarget,
    connection: ServeConnection,
    signal: AbortSignal,
  ): Promise<Outcome | undefined> {
    const inputs = inputPaths(this.#requireGraph(), node);
    const valid = new Set(
      await connection.queryValidPaths(inputs, { lock: true, substitute: true }),
    );
    const missing = inputs.filter((path) => !valid.has(path));
    const sources = new Set(node.inputSrcs);
    const notSources = missing.filter((path) => !sources.has(path));
    if (notSources.length > 0) {
      return {
        kind: 'failed',
        message: `inputs are neither on ${target.name} nor substitutable from the cache: ${notSources.join(', ')}`,
        log: '',
      };
    }
    if (missing.length > 0) await this.#copySources(target, missing, signal);
    return undefined;
  }

  async #build(node: DrvNode, connection: ServeConnection): Promise<Outcome> {
    const inputs = inputPaths(this.#requireGraph(), node);
    connection.takeLog();
    const result = await connection.buildDerivation(
      node.drvPath,
      { ...node.drv, inputSrcs: inputs },
      { maxSilentTime: this.#options.maxSilentTime ?? 0 },
    );
    const log = connection.takeLog();
    if (buildSucceeded(result)) return { kind: 'built' };
    return {
      kind: 'failed',
      message: `${result.statusName}: ${result.errorMsg.trim()}`,
      log,
    };
  }

  async #push(node: DrvNode, target: SshTarget, signal: AbortSignal): Promise<Outcome> {
    const url = this.#options.pushUrl;
    if (url === undefined) return { kind: 'built' };
    const outputs = [...node.outputs.values()].filter((path) => path !== '');
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
    const result = await run('ssh', [...target.args, '--', command], {
      signal,
      env: this.#options.env ?? process.env,
    });
    if (result.code === 255) {
      throw new Error(`ssh to ${target.name} failed while pushing: ${result.stderr.trim()}`);
    }
    if (result.code !== 0) {
      return {
        kind: 'failed',
        message: `built on ${target.name}, but pushing the outputs to ${url} failed`,
        log: result.stderr,
      };
    }
    return { kind: 'built' };
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
    const result = await run('nix', args, {
      signal,
      env: { ...(this.#options.env ?? process.env), NIX_SSHOPTS: target.nixSshOpts },
    });
    if (result.code !== 0) {
      throw new Error(
        `copying sources to ${target.name} failed: ${result.stderr.trim().split('\n').slice(-4).join('\n')}`,
      );
    }
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

  async #connection(target: SshTarget, kind: 'fetch' | 'build'): Promise<ServeConnection> {
    const idle = this.#idle.get(`${target.name}/${kind}`) ?? [];
    for (let connection = idle.pop(); connection !== undefined; connection = idle.pop()) {
      if (connection.alive) return connection;
      this.#open.delete(connection);
    }
    const connection = await ServeConnection.open(
      ['ssh', ...target.args, '--', 'nix-store --serve --write'],
      {
        label: target.name,
        env: this.#options.env ?? process.env,
        signal: this.#closing.signal,
      },
    );
    if (this.#closing.signal.aborted) {
      connection.close();
      throw new Error(`BuilderPool: closed while connecting to ${target.name}`);
    }
    this.#open.add(connection);
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

/** Builders upload zstd unless the URL already says how. */
function withCompression(url: string): string {
  if (/[?&]compression=/.test(url)) return url;
  return `${url}${url.includes('?') ? '&' : '?'}compression=zstd`;
}

/**
 * Groups small paths ready for the cache into batches. A batch goes out as soon as it is full,
 * or at the next turn when fewer than `maxInFlight` batches are on the wire; while they are,
 * paths that become ready pile up in the open batch, so the batch size follows how fast the
 * cache answers. A path may join the open batch with references queued in it before it: the
 * cache commits a batch's entries in order.
 */
export interface BatcherOptions<E, R> {
  /** Sends entries in order; resolves with one result per entry, in order. */
  readonly send: (entries: readonly E[]) => Promise<readonly R[]>;
  readonly sizeOf: (entry: E) => number;
  readonly keyOf: (entry: E) => string;
  readonly maxEntries: number;
  readonly maxBytes: number;
  readonly maxInFlight: number;
}

interface Waiting<E, R> {
  readonly entry: E;
  readonly resolve: (result: R) => void;
  readonly reject: (error: unknown) => void;
}

export class Batcher<E, R> {
  readonly #options: BatcherOptions<E, R>;
  #open: Waiting<E, R>[] = [];
  #openKeys = new Set<string>();
  #openBytes = 0;
  #inFlight = 0;
  #scheduled = false;

  constructor(options: BatcherOptions<E, R>) {
    this.#options = options;
  }

  /** Whether `key` waits in the open batch (and so will be committed before anything added now). */
  isQueued(key: string): boolean {
    return this.#openKeys.has(key);
  }

  /**
   * Whether `entry` fits in the open batch. Only then may it count on references queued there:
   * an entry that does not fit sends the open batch off first, and its references with it.
   */
  hasRoom(entry: E): boolean {
    return (
      this.#open.length === 0 ||
      (this.#open.length < this.#options.maxEntries &&
        this.#openBytes + this.#options.sizeOf(entry) <= this.#options.maxBytes)
    );
  }

  add(entry: E): Promise<R> {
    const size = this.#options.sizeOf(entry);
    const { promise, resolve, reject } = Promise.withResolvers<R>();
    if (!this.hasRoom(entry)) this.#flush();
    this.#open.push({ entry, resolve, reject });
    this.#openKeys.add(this.#options.keyOf(entry));
    this.#openBytes += size;
    this.#schedule();
    return promise;
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= this.#options.maxInFlight) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      if (this.#open.length > 0 && this.#inFlight < this.#options.maxInFlight) this.#flush();
    });
  }

  #flush(): void {
    const batch = this.#open;
    this.#open = [];
    this.#openKeys = new Set();
    this.#openBytes = 0;
    this.#inFlight++;
    this.#options
      .send(batch.map((waiting) => waiting.entry))
      .then(
        (results) => {
          batch.forEach((waiting, index) => {
            const result = results[index];
            if (result === undefined)
              waiting.reject(new Error('the batch returned too few results'));
            else waiting.resolve(result);
          });
        },
        (error: unknown) => {
          for (const waiting of batch) waiting.reject(error);
        },
      )
      .finally(() => {
        this.#inFlight--;
        if (this.#open.length > 0) this.#schedule();
      })
      .catch(() => undefined);
  }
}

/**
 * A discrete-event clock for scheduler tests: time moves only when `run()` jumps to the next
 * timer, and every promise reaction settles before the next jump, so "started at once" means
 * started at the same virtual millisecond.
 */
import type { BuilderSpec, Clock, Executor, JobSpec, Outcome } from './scheduler.ts';

interface Timer {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
}

export class FakeClock implements Clock {
  #now = 0;
  #seq = 0;
  #timers: Timer[] = [];

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): () => void {
    const timer = { at: this.#now + ms, seq: this.#seq++, fn };
    this.#timers.push(timer);
    return () => {
      this.#timers = this.#timers.filter((t) => t !== timer);
    };
  }

  /** Fires timers in time order until `done` settles; returns its value. */
  async run<T>(done: Promise<T>): Promise<T> {
    const state = { settled: false };
    const result = done.finally(() => (state.settled = true));
    for (;;) {
      await new Promise((resolve) => setImmediate(resolve));
      if (state.settled) return result;
      this.#timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.#timers.shift();
      if (next === undefined) throw new Error('FakeClock: nothing left to run and not settled');
      this.#now = next.at;
      next.fn();
    }
  }
}

export interface FakeRun {
  readonly drvPath: string;
  readonly builder: string;
  readonly start: number;
  /** When the executor said the outputs were valid (undefined without a push time). */
  readonly valid: number | undefined;
  readonly end: number;
  /** Stopped through its abort signal. */
  readonly aborted: boolean;
}

/**
 * Builds take `seconds(job) / speedFactor` of fake time, then `pushSeconds(job)` to push (the
 * outputs are reported valid in between); `outcome` may fail or lose some. An abort ends a run
 * at once as cancelled. Records every run and the most builds each builder ran at once.
 */
export class FakeExecutor implements Executor {
  readonly runs: FakeRun[] = [];
  readonly peak = new Map<string, number>();
  readonly #clock: FakeClock;
  readonly #seconds: (job: JobSpec) => number;
  readonly #outcome: (job: JobSpec, builder: BuilderSpec, attempt: number) => Outcome;
  readonly #pushSeconds: (job: JobSpec) => number;
  readonly #active = new Map<string, number>();
  readonly #attempts = new Map<string, number>();

  constructor(
    clock: FakeClock,
    seconds: (job: JobSpec) => number,
    outcome: (job: JobSpec, builder: BuilderSpec, attempt: number) => Outcome = () => ({
      kind: 'built',
    }),
    pushSeconds: (job: JobSpec) => number = () => 0,
  ) {
    this.#clock = clock;
    this.#seconds = seconds;
    this.#outcome = outcome;
    this.#pushSeconds = pushSeconds;
  }

  execute(
    job: JobSpec,
    builder: BuilderSpec,
    signal?: AbortSignal,
    onOutputsValid?: () => void,
  ): Promise<Outcome> {
    const start = this.#clock.now();
    this.#change(builder.name, 1);
    const attempt = (this.#attempts.get(job.drvPath) ?? 0) + 1;
    this.#attempts.set(job.drvPath, attempt);
    const ms = (this.#seconds(job) * 1000) / builder.speedFactor;
    const pushMs = this.#pushSeconds(job) * 1000;
    return new Promise((resolve) => {
      let valid: number | undefined;
      let building = true;
      let cancelTimer = (): void => undefined;
      const finish = (aborted: boolean): void => {
        signal?.removeEventListener('abort', onAbort);
        if (building) this.#change(builder.name, -1);
        building = false;
        this.runs.push({
          drvPath: job.drvPath,
          builder: builder.name,
          start,
          valid,
          end: this.#clock.now(),
          aborted,
        });
        resolve(
          aborted
            ? { kind: 'failed', message: 'cancelled', log: '' }
            : this.#outcome(job, builder, attempt),
        );
      };
      const onAbort = (): void => {
        cancelTimer();
        finish(true);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      cancelTimer = this.#clock.setTimeout(() => {
        if (pushMs <= 0) {
          finish(false);
          return;
        }
        valid = this.#clock.now();
        building = false;
        this.#change(builder.name, -1);
        onOutputsValid?.();
        cancelTimer = this.#clock.setTimeout(() => {
          finish(false);
        }, pushMs);
      }, ms);
    });
  }

  #change(builder: string, by: number): void {
    const active = (this.#active.get(builder) ?? 0) + by;
    this.#active.set(builder, active);
    this.peak.set(builder, Math.max(active, this.peak.get(builder) ?? 0));
  }
}

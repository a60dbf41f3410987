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
  readonly end: number;
}

/**
 * Builds take `seconds(job) / speedFactor` of fake time; `outcome` may fail or lose some.
 * Records every run and the most jobs each builder ran at once.
 */
export class FakeExecutor implements Executor {
  readonly runs: FakeRun[] = [];
  readonly peak = new Map<string, number>();
  readonly #clock: FakeClock;
  readonly #seconds: (job: JobSpec) => number;
  readonly #outcome: (job: JobSpec, builder: BuilderSpec, attempt: number) => Outcome;
  readonly #active = new Map<string, number>();
  readonly #attempts = new Map<string, number>();

  constructor(
    clock: FakeClock,
    seconds: (job: JobSpec) => number,
    outcome: (job: JobSpec, builder: BuilderSpec, attempt: number) => Outcome = () => ({
      kind: 'built',
    }),
  ) {
    this.#clock = clock;
    this.#seconds = seconds;
    this.#outcome = outcome;
  }

  execute(job: JobSpec, builder: BuilderSpec): Promise<Outcome> {
    const start = this.#clock.now();
    const active = (this.#active.get(builder.name) ?? 0) + 1;
    this.#active.set(builder.name, active);
    this.peak.set(builder.name, Math.max(active, this.peak.get(builder.name) ?? 0));
    const attempt = (this.#attempts.get(job.drvPath) ?? 0) + 1;
    this.#attempts.set(job.drvPath, attempt);
    const ms = (this.#seconds(job) * 1000) / builder.speedFactor;
    return new Promise((resolve) => {
      this.#clock.setTimeout(() => {
        this.#active.set(builder.name, (this.#active.get(builder.name) ?? 1) - 1);
        this.runs.push({
          drvPath: job.drvPath,
          builder: builder.name,
          start,
          end: this.#clock.now(),
        });
        resolve(this.#outcome(job, builder, attempt));
      }, ms);
    });
  }
}

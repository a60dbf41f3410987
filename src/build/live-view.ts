/**
 * The live terminal view of `firn build`: one row per builder with what it runs (elapsed vs
 * expected), a totals row with an ETA from the learned durations, and the finished events
 * scrolling above. `renderLive` is pure; `LiveView` redraws it on a terminal four times a second
 * (a display refresh: scheduling itself never waits on a timer).
 */
import type { Writable } from 'node:stream';
import { remainingPath, type BuilderSpec, type JobSpec, type SchedulerEvent } from './scheduler.ts';

export interface LiveState {
  readonly builders: readonly BuilderSpec[];
  readonly jobs: readonly JobSpec[];
  /** drv path → expected seconds from its start to the end of the longest chain behind it. */
  readonly remaining: ReadonlyMap<string, number>;
  readonly running: Map<
    string,
    { builder: string; name: string; startMs: number; expectedSeconds: number }
  >;
  readonly finished: Set<string>;
  built: number;
  failed: number;
  skipped: number;
}

export function liveState(jobs: readonly JobSpec[], builders: readonly BuilderSpec[]): LiveState {
  return {
    builders,
    jobs,
    remaining: remainingPath(jobs),
    running: new Map(),
    finished: new Set(),
    built: 0,
    failed: 0,
    skipped: 0,
  };
}

export function applyEvent(state: LiveState, event: SchedulerEvent, nowMs: number): void {
  switch (event.type) {
    case 'start':
      state.running.set(event.drvPath, {
        builder: event.builder,
        name: event.name,
        startMs: nowMs,
        expectedSeconds: event.expectedSeconds,
      });
      return;
    case 'built':
      state.running.delete(event.drvPath);
      state.finished.add(event.drvPath);
      state.built++;
      return;
    case 'failed':
      state.running.delete(event.drvPath);
      state.finished.add(event.drvPath);
      state.failed++;
      return;
    case 'skipped':
      state.finished.add(event.drvPath);
      state.skipped++;
      return;
    case 'requeued':
      state.running.delete(event.drvPath);
      return;
    case 'builder-down':
      return;
  }
}

/**
 * Seconds left: the longer of the longest remaining chain and the remaining work spread over
 * all slots (both from expected durations; capacity per system is ignored).
 */
export function eta(state: LiveState, nowMs: number): number {
  let chain = 0;
  let work = 0;
  for (const job of state.jobs) {
    if (state.finished.has(job.drvPath)) continue;
    const run = state.running.get(job.drvPath);
    const elapsed = run === undefined ? 0 : (nowMs - run.startMs) / 1000;
    chain = Math.max(chain, (state.remaining.get(job.drvPath) ?? 0) - elapsed);
    work += Math.max(0, job.expectedSeconds - elapsed);
  }
  const slots = state.builders.reduce((sum, builder) => sum + builder.maxJobs, 0);
  return Math.max(0, chain, slots === 0 ? 0 : work / slots);
}

export function renderLive(state: LiveState, nowMs: number, width = 100): string[] {
  const lines = state.builders.map((builder) => {
    const runs = [...state.running.values()].filter((run) => run.builder === builder.name);
    const what =
      runs.length === 0
        ? 'idle'
        : runs
            .map(
              (run) =>
                `${run.name} ${((nowMs - run.startMs) / 1000).toFixed(0)}/${run.expectedSeconds.toFixed(0)} s`,
            )
            .join(' · ');
    return `[${builder.name}] ${what}`.slice(0, width);
  });
  const total = state.jobs.length;
  lines.push(
    `${state.built}/${total} built · ${state.running.size} running · ${state.failed} failed` +
      (state.skipped > 0 ? ` · ${state.skipped} not built` : '') +
      ` · ETA ${Math.ceil(eta(state, nowMs))} s`,
  );
  return lines;
}

/** Draws the view under the scrolling event lines until close(). */
export class LiveView {
  readonly #out: Writable;
  readonly #state: LiveState;
  readonly #timer: NodeJS.Timeout;
  #drawn = 0;

  constructor(out: Writable, state: LiveState) {
    this.#out = out;
    this.#state = state;
    this.#timer = setInterval(() => {
      this.#draw('');
    }, 250);
    this.#timer.unref();
  }

  /** Applies `event`; `line` (a finished-event line, or '') scrolls above the view. */
  event(event: SchedulerEvent, line: string): void {
    applyEvent(this.#state, event, performance.now());
    this.#draw(event.type === 'start' ? '' : line);
  }

  close(): void {
    clearInterval(this.#timer);
    this.#out.write(this.#erase());
    this.#drawn = 0;
  }

  #draw(line: string): void {
    // A pseudo-terminal without a size reports 0 columns.
    const reported = (this.#out as { columns?: number }).columns ?? 0;
    const columns = reported >= 20 ? reported : 100;
    const lines = renderLive(this.#state, performance.now(), columns - 1);
    this.#out.write(this.#erase() + line + lines.join('\n') + '\n');
    this.#drawn = lines.length;
  }

  /** Moves up over the last drawing and clears to the end of the screen. */
  #erase(): string {
    return this.#drawn === 0 ? '' : `\x1b[${this.#drawn}F\x1b[J`;
  }
}

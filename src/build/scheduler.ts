/**
 * The scheduler: which derivation runs next, and where. Pure — it drives an `Executor` and reads
 * a `Clock`, so tests run it against a fake clock and fake builds.
 *
 * - A derivation may run on a builder whose systems include its system, whose features (plus
 *   mandatory ones) cover its required features, and whose mandatory features it all requires
 *   (Nix's allSupported and mandatoryMet).
 * - Priority is the longest remaining path: the derivation's expected duration plus the longest
 *   chain of expected durations among what waits on it. Ties go to the derivation with more
 *   dependents, then to the name, so a run is reproducible.
 * - A builder runs at most maxJobs derivations of this coordinator at once. Among builders with
 *   a free slot the fastest (speed factor) is chosen, then the one that built more of the
 *   derivation's inputs (it need not substitute them), then the least loaded.
 * - No polling: a finished build frees its slot and the next derivation starts in the same turn
 *   of the event loop. The only timer is a lost builder's backoff.
 * - Pipelining: a build's slot is freed as soon as its outputs are valid on the builder (the
 *   executor says so), while it still pushes them to the cache. A dependent whose unfinished
 *   inputs are all valid on that builder may start there at once; on other builders only once
 *   they are done. A derivation is done only when its push is confirmed and every input is
 *   done; an input whose push fails fails, and what was pipelined on top of it is stopped and
 *   counted as not built.
 * - A failed build stops what depends on it; independent branches go on. A builder that is lost
 *   mid-build (connection gone) gets its job put back in the queue and is left alone for a
 *   backoff that doubles each time; a job is tried on at most `maxAttempts` lost builders.
 */
import { firnError } from '../errors.ts';

export interface BuilderSpec {
  readonly name: string;
  readonly systems: readonly string[];
  readonly maxJobs: number;
  readonly speedFactor: number;
  readonly features: readonly string[];
  readonly mandatoryFeatures: readonly string[];
}

export interface JobSpec {
  readonly drvPath: string;
  readonly name: string;
  readonly system: string;
  readonly requiredFeatures: readonly string[];
  /** drv paths of jobs (in this schedule) that must be built first. */
  readonly deps: readonly string[];
  /** Expected seconds on a builder with speed factor 1. */
  readonly expectedSeconds: number;
}

export type Outcome =
  | { readonly kind: 'built' }
  | { readonly kind: 'failed'; readonly message: string; readonly log: string }
  | { readonly kind: 'builder-lost'; readonly message: string };

export interface Executor {
  /**
   * Runs `job` on `builder`; resolves 'built' once it is done (outputs in the cache). An
   * executor may call `onOutputsValid` earlier, when the outputs are valid on the builder and
   * only the push is left: the build's slot is then free, and dependents may start on that
   * builder (pipelining).
   */
  execute(
    job: JobSpec,
    builder: BuilderSpec,
    signal: AbortSignal,
    onOutputsValid?: () => void,
  ): Promise<Outcome>;
}

export interface Clock {
  /** Milliseconds. */
  now(): number;
  setTimeout(fn: () => void, ms: number): () => void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout(fn, ms) {
    const timer = setTimeout(fn, ms);
    return () => {
      clearTimeout(timer);
    };
  },
};

export type SchedulerEvent =
  | {
      readonly type: 'start';
      readonly drvPath: string;
      readonly name: string;
      readonly builder: string;
      /** On this builder (speed factor applied). */
      readonly expectedSeconds: number;
      readonly at: number;
    }
  | {
      readonly type: 'built';
      readonly drvPath: string;
      readonly name: string;
      readonly builder: string;
      readonly seconds: number;
    }
  | {
      readonly type: 'failed';
      readonly drvPath: string;
      readonly name: string;
      readonly builder: string;
      readonly message: string;
      readonly log: string;
    }
  | {
      readonly type: 'skipped';
      readonly drvPath: string;
      readonly name: string;
      /** The failed derivation that stopped it. */
      readonly because: string;
    }
  | {
      readonly type: 'requeued';
      readonly drvPath: string;
      readonly builder: string;
      readonly message: string;
    }
  | { readonly type: 'builder-down'; readonly builder: string; readonly seconds: number };

export interface BuiltJob {
  readonly builder: string;
  readonly startMs: number;
  readonly endMs: number;
}

export interface ScheduleResult {
  readonly built: ReadonlyMap<string, BuiltJob>;
  readonly failed: ReadonlyMap<
    string,
    { readonly builder: string; readonly message: string; readonly log: string }
  >;
  /** drv path → the failed derivation that stopped it. */
  readonly skipped: ReadonlyMap<string, string>;
  readonly cancelled: boolean;
  readonly wallMs: number;
}

export interface ScheduleOptions {
  readonly jobs: readonly JobSpec[];
  readonly builders: readonly BuilderSpec[];
  readonly executor: Executor;
  readonly clock?: Clock;
  readonly onEvent?: (event: SchedulerEvent) => void;
  readonly signal?: AbortSignal;
  readonly maxAttempts?: number;
  /** First backoff for a lost builder; doubles on each loss, up to 16×. */
  readonly backoffMs?: number;
}

// ── matching ───────────────────────────────────────────────────────────────────────────────────

export function canBuild(
  builder: BuilderSpec,
  job: Pick<JobSpec, 'system' | 'requiredFeatures'>,
): boolean {
  if (builder.maxJobs < 1) return false;
  if (job.system !== 'builtin' && !builder.systems.includes(job.system)) return false;
  const supported = new Set([...builder.features, ...builder.mandatoryFeatures]);
  if (!job.requiredFeatures.every((feature) => supported.has(feature))) return false;
  return builder.mandatoryFeatures.every((feature) => job.requiredFeatures.includes(feature));
}

/** Throws FIRN_E_BUILD_NO_BUILDER naming every job no builder can take (before any build). */
export function checkPlacement(jobs: readonly JobSpec[], builders: readonly BuilderSpec[]): void {
  const homeless = jobs.filter((job) => !builders.some((builder) => canBuild(builder, job)));
  if (homeless.length === 0) return;
  const lines = homeless.map((job) => {
    const features =
      job.requiredFeatures.length === 0
        ? ''
        : ` with features {${job.requiredFeatures.join(', ')}}`;
    return `${job.drvPath} needs a ${job.system} builder${features}`;
  });
  const offered = builders
    .map(
      (b) =>
        `${b.name}: ${b.systems.join(',') || '(no systems)'}` +
        (b.features.length > 0 ? ` features {${b.features.join(', ')}}` : '') +
        (b.mandatoryFeatures.length > 0 ? ` mandatory {${b.mandatoryFeatures.join(', ')}}` : ''),
    )
    .join('; ');
  throw firnError(
    'FIRN_E_BUILD_NO_BUILDER',
    `no builder can build ${homeless.length === 1 ? 'this derivation' : `${homeless.length} derivations`} (nothing was built):\n  ${lines.join('\n  ')}`,
    {
      hint: `builders: ${offered || '(none with role "builder")'}; add the system (or extra-platforms) and features to a builder in the fleet inventory`,
      details: { derivations: homeless.map((job) => job.drvPath) },
    },
  );
}

// ── priorities ─────────────────────────────────────────────────────────────────────────────────

/** drv path → expected seconds from its start to the end of the longest chain behind it. */
export function remainingPath(jobs: readonly JobSpec[]): Map<string, number> {
  const byPath = new Map(jobs.map((job) => [job.drvPath, job]));
  const dependents = new Map<string, string[]>(jobs.map((job) => [job.drvPath, []]));
  for (const job of jobs) for (const dep of job.deps) dependents.get(dep)?.push(job.drvPath);
  const memo = new Map<string, number>();
  // Iterative post-order, so a deep chain cannot overflow the stack.
  for (const root of byPath.keys()) {
    const stack: [string, boolean][] = [[root, false]];
    while (stack.length > 0) {
      const [path, expanded] = stack.pop() ?? ['', true];
      if (memo.has(path)) continue;
      const after = dependents.get(path) ?? [];
      if (!expanded) {
        stack.push([path, true]);
        for (const next of after) if (!memo.has(next)) stack.push([next, false]);
        continue;
      }
      const tail = Math.max(0, ...after.map((next) => memo.get(next) ?? 0));
      memo.set(path, (byPath.get(path)?.expectedSeconds ?? 0) + tail);
    }
  }
  return memo;
}

/** The chain of jobs with the longest expected total, first to last. */
export function criticalPath(jobs: readonly JobSpec[]): string[] {
  const remaining = remainingPath(jobs);
  const byPath = new Map(jobs.map((job) => [job.drvPath, job]));
  const dependents = new Map<string, string[]>(jobs.map((job) => [job.drvPath, []]));
  for (const job of jobs) for (const dep of job.deps) dependents.get(dep)?.push(job.drvPath);
  const best = (paths: Iterable<string>): string | undefined => {
    let top: string | undefined;
    for (const path of paths) {
      if (top === undefined || (remaining.get(path) ?? 0) > (remaining.get(top) ?? 0)) top = path;
    }
    return top;
  };
  const path: string[] = [];
  const starts = jobs.filter((job) => job.deps.every((dep) => !byPath.has(dep)));
  for (let at = best(starts.map((job) => job.drvPath)); at !== undefined;) {
    path.push(at);
    at = best(dependents.get(at) ?? []);
  }
  return path;
}

// ── running ────────────────────────────────────────────────────────────────────────────────────

interface BuilderState {
  readonly spec: BuilderSpec;
  /** Builds holding a slot (a build whose outputs are valid there and only pushing holds none). */
  running: number;
  downUntil: number;
  losses: number;
}

interface Run {
  readonly job: JobSpec;
  readonly state: BuilderState;
  readonly controller: AbortController;
  readonly startMs: number;
  /** Holds one of the builder's max-jobs slots: until its outputs are valid there. */
  slot: boolean;
}

export function schedule(options: ScheduleOptions): Promise<ScheduleResult> {
  const clock = options.clock ?? realClock;
  const emit = options.onEvent ?? (() => undefined);
  const maxAttempts = options.maxAttempts ?? 3;
  const backoffMs = options.backoffMs ?? 5000;
  const jobs = new Map(options.jobs.map((job) => [job.drvPath, job]));
  checkPlacement(options.jobs, options.builders);

  const priority = remainingPath(options.jobs);
  const dependents = new Map<string, string[]>([...jobs.keys()].map((path) => [path, []]));
  for (const job of options.jobs) {
    for (const dep of job.deps) if (jobs.has(dep)) dependents.get(dep)?.push(job.drvPath);
  }
  /** drv path → its inputs not done yet. */
  const waitingOn = new Map(
    options.jobs.map((job) => [job.drvPath, new Set(job.deps.filter((dep) => jobs.has(dep)))]),
  );
  const builders: BuilderState[] = options.builders.map((spec) => ({
    spec,
    running: 0,
    downUntil: 0,
    losses: 0,
  }));
  const attempts = new Map<string, number>();
  /** Every input done: may start on any capable builder. */
  const ready = new Set<string>();
  for (const [path, deps] of waitingOn) if (deps.size === 0) ready.add(path);

  const built = new Map<string, BuiltJob>();
  const failed = new Map<string, { builder: string; message: string; log: string }>();
  const skipped = new Map<string, string>();
  const running = new Map<string, Run>();
  /** Jobs whose outputs are valid on a builder but not done (pushing, or waiting on inputs). */
  const validOn = new Map<string, BuilderState>();
  /** Built before every input was done (pipelined on top of them): done when they are. */
  const early = new Map<string, BuiltJob>();
  const timers = new Set<() => void>();
  const started = clock.now();
  let cancelled = false;

  const order = (a: string, b: string): number => {
    const byPriority = (priority.get(b) ?? 0) - (priority.get(a) ?? 0);
    if (byPriority !== 0) return byPriority;
    const byFanOut = (dependents.get(b)?.length ?? 0) - (dependents.get(a)?.length ?? 0);
    if (byFanOut !== 0) return byFanOut;
    return a < b ? -1 : a > b ? 1 : 0;
  };

  return new Promise<ScheduleResult>((resolve) => {
    const finishIfDone = (): void => {
      if (running.size > 0) return;
      if (!cancelled && ready.size > 0) return;
      const unresolved = [...jobs.keys()].some(
        (path) => !built.has(path) && !failed.has(path) && !skipped.has(path),
      );
      if (unresolved && !cancelled) return;
      for (const cancel of timers) cancel();
      options.signal?.removeEventListener('abort', onAbort);
      resolve({ built, failed, skipped, cancelled, wallMs: clock.now() - started });
    };

    /** Inputs of `job` that `state` built itself: it need not substitute those. */
    const local = (job: JobSpec, state: BuilderState): number =>
      job.deps.filter(
        (dep) => (built.get(dep)?.builder ?? validOn.get(dep)?.spec.name) === state.spec.name,
      ).length;

    const free = (state: BuilderState, now: number): boolean =>
      state.running < state.spec.maxJobs && state.downUntil <= now;

    const pickBuilder = (job: JobSpec, now: number): BuilderState | undefined => {
      let best: BuilderState | undefined;
      for (const state of builders) {
        if (!free(state, now) || !canBuild(state.spec, job)) continue;
        if (best === undefined || better(job, state, best)) best = state;
      }
      return best;
    };

    /** Fastest first; then the one that has more of the inputs; then the least loaded. */
    const better = (job: JobSpec, a: BuilderState, b: BuilderState): boolean => {
      if (a.spec.speedFactor !== b.spec.speedFactor) return a.spec.speedFactor > b.spec.speedFactor;
      const locality = local(job, a) - local(job, b);
      if (locality !== 0) return locality > 0;
      return a.running / a.spec.maxJobs < b.running / b.spec.maxJobs;
    };

    const waiting = (path: string): boolean =>
      !ready.has(path) &&
      !running.has(path) &&
      !early.has(path) &&
      !built.has(path) &&
      !failed.has(path) &&
      !skipped.has(path);

    /**
     * Pipelining: a job whose inputs not yet done all have their outputs valid on one builder
     * (built there, still pushing) may start on that builder, and only there.
     */
    const pipelined = (): Map<string, BuilderState> => {
      const out = new Map<string, BuilderState>();
      for (const [input, state] of validOn) {
        for (const next of dependents.get(input) ?? []) {
          if (out.has(next) || !waiting(next)) continue;
          const deps = waitingOn.get(next) ?? new Set<string>();
          if ([...deps].every((dep) => validOn.get(dep) === state)) out.set(next, state);
        }
      }
      return out;
    };

    const dispatch = (): void => {
      if (cancelled) {
        finishIfDone();
        return;
      }
      const now = clock.now();
      const candidates = new Map<string, BuilderState | undefined>(
        [...ready].map((path) => [path, undefined]),
      );
      for (const [path, state] of pipelined()) candidates.set(path, state);
      for (const path of [...candidates.keys()].sort(order)) {
        const job = jobs.get(path);
        if (job === undefined) continue;
        const only = candidates.get(path);
        const state =
          only === undefined
            ? pickBuilder(job, now)
            : free(only, now) && canBuild(only.spec, job)
              ? only
              : undefined;
        if (state === undefined) continue;
        ready.delete(path);
        start(job, state);
      }
      finishIfDone();
    };

    const start = (job: JobSpec, state: BuilderState): void => {
      state.running++;
      const run: Run = {
        job,
        state,
        controller: new AbortController(),
        startMs: clock.now(),
        slot: true,
      };
      running.set(job.drvPath, run);
      emit({
        type: 'start',
        drvPath: job.drvPath,
        name: job.name,
        builder: state.spec.name,
        expectedSeconds: job.expectedSeconds / Math.max(1, state.spec.speedFactor),
        at: run.startMs,
      });
      const freeSlot = (): void => {
        if (!run.slot) return;
        run.slot = false;
        state.running--;
      };
      const onOutputsValid = (): void => {
        queueMicrotask(() => {
          if (running.get(job.drvPath) !== run || !run.slot || cancelled) return;
          freeSlot();
          validOn.set(job.drvPath, state);
          dispatch();
        });
      };
      options.executor
        .execute(job, state.spec, run.controller.signal, onOutputsValid)
        .catch((error: unknown): Outcome => ({
          kind: 'builder-lost',
          message: error instanceof Error ? error.message : String(error),
        }))
        .then((outcome) => {
          freeSlot();
          running.delete(job.drvPath);
          settle(run, outcome);
          dispatch();
        })
        .catch((error: unknown) => {
          // settle and dispatch are synchronous bookkeeping; an exception there is a bug.
          queueMicrotask(() => {
            throw error;
          });
        });
    };

    /** Marks `path` done and, in turn, whatever was built early on top of it. */
    const complete = (path: string, record: BuiltJob): void => {
      const stack: [string, BuiltJob][] = [[path, record]];
      for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
        const [done, how] = top;
        built.set(done, how);
        validOn.delete(done);
        early.delete(done);
        const job = jobs.get(done);
        emit({
          type: 'built',
          drvPath: done,
          name: job?.name ?? done,
          builder: how.builder,
          seconds: (how.endMs - how.startMs) / 1000,
        });
        for (const next of dependents.get(done) ?? []) {
          const deps = waitingOn.get(next);
          deps?.delete(done);
          if (deps?.size !== 0 || skipped.has(next)) continue;
          const before = early.get(next);
          if (before !== undefined) stack.push([next, before]);
          else if (waiting(next)) ready.add(next);
        }
      }
    };

    const settle = (run: Run, outcome: Outcome): void => {
      const endMs = clock.now();
      const { job, state } = run;
      const builder = state.spec.name;
      // Cancelled, or stopped because an input it was pipelined on failed.
      if (cancelled || skipped.has(job.drvPath)) return;
      if (outcome.kind === 'built') {
        state.losses = 0;
        const record = { builder, startMs: run.startMs, endMs };
        if ((waitingOn.get(job.drvPath)?.size ?? 0) > 0) {
          early.set(job.drvPath, record);
          validOn.set(job.drvPath, state);
          return;
        }
        complete(job.drvPath, record);
        return;
      }
      validOn.delete(job.drvPath);
      if (outcome.kind === 'builder-lost') {
        state.losses++;
        const downMs = backoffMs * 2 ** Math.min(state.losses - 1, 4);
        state.downUntil = endMs + downMs;
        emit({ type: 'builder-down', builder, seconds: downMs / 1000 });
        const cancel = clock.setTimeout(() => {
          timers.delete(cancel);
          dispatch();
        }, downMs);
        timers.add(cancel);
        const tries = (attempts.get(job.drvPath) ?? 0) + 1;
        attempts.set(job.drvPath, tries);
        if (tries < maxAttempts) {
          emit({ type: 'requeued', drvPath: job.drvPath, builder, message: outcome.message });
          // Its inputs may be unfinished (it was pipelined): then it waits for them again.
          if ((waitingOn.get(job.drvPath)?.size ?? 0) === 0) ready.add(job.drvPath);
          return;
        }
      }
      const message = outcome.message;
      const log = outcome.kind === 'failed' ? outcome.log : '';
      failed.set(job.drvPath, { builder, message, log });
      emit({ type: 'failed', drvPath: job.drvPath, name: job.name, builder, message, log });
      const stack = [...(dependents.get(job.drvPath) ?? [])];
      for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
        if (skipped.has(next)) continue;
        skipped.set(next, job.drvPath);
        ready.delete(next);
        early.delete(next);
        validOn.delete(next);
        // Pipelined on top of the failed one: its result must not count.
        running.get(next)?.controller.abort();
        emit({
          type: 'skipped',
          drvPath: next,
          name: jobs.get(next)?.name ?? next,
          because: job.drvPath,
        });
        stack.push(...(dependents.get(next) ?? []));
      }
    };

    const onAbort = (): void => {
      cancelled = true;
      for (const run of running.values()) run.controller.abort();
      finishIfDone();
    };
    if (options.signal?.aborted === true) onAbort();
    else options.signal?.addEventListener('abort', onAbort, { once: true });
    dispatch();
  });
}

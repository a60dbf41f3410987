/**
 * `firn build` without the command line: installables → drv paths (one nix-instantiate) →
 * graph (our .drv parser) → cache check (one bulk query) → schedule over the fleet's builders
 * → outputs pushed by the builders.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firnError } from '../errors.ts';
import { buildersOf, type Fleet } from '../fleet/inventory.ts';
import { runChecked } from '../process/run.ts';
import { BuilderPool } from './builder-pool.ts';
import { firnCacheQuery, pruneCached } from './cache-check.ts';
import type { DurationModel } from './durations.ts';
import { readGraph, type BuildGraph } from './graph.ts';
import {
  criticalPath,
  schedule,
  type BuilderSpec,
  type JobSpec,
  type ScheduleResult,
  type SchedulerEvent,
} from './scheduler.ts';
import { sshTarget } from './ssh.ts';
import { trace } from './trace.ts';

export interface Evaluation {
  readonly file: string;
  readonly attrs: readonly string[];
  /** name → Nix expression */
  readonly args: readonly (readonly [string, string])[];
  readonly argstrs: readonly (readonly [string, string])[];
}

/** One `nix-instantiate` call; returns the drv paths it printed. */
export async function instantiate(
  evaluation: Evaluation,
  options: { readonly storeRoot?: string | undefined; readonly env?: NodeJS.ProcessEnv } = {},
): Promise<string[]> {
  const args = [
    evaluation.file,
    ...evaluation.attrs.flatMap((attr) => ['-A', attr]),
    ...evaluation.args.flatMap(([name, expr]) => ['--arg', name, expr]),
    ...evaluation.argstrs.flatMap(([name, value]) => ['--argstr', name, value]),
    ...(options.storeRoot === undefined ? [] : ['--store', options.storeRoot]),
  ];
  trace('instantiate-start');
  const result = await runChecked('nix-instantiate', args, { env: options.env ?? process.env });
  trace('instantiate-end');
  const paths = result.stdout
    .toString('utf8')
    .split('\n')
    .map((line) => line.replace(/!.*$/, '').trim())
    .filter((line) => line.endsWith('.drv'));
  if (paths.length === 0) {
    throw firnError('FIRN_E_USAGE', `evaluating ${evaluation.file} gave no derivations`, {
      hint: 'point -A at a derivation or an attribute set of derivations',
    });
  }
  return paths;
}

export function builderSpecs(fleet: Fleet): BuilderSpec[] {
  return buildersOf(fleet).map((host) => ({
    name: host.name,
    systems: host.systems,
    maxJobs: host.maxJobs,
    speedFactor: host.speedFactor,
    features: host.features,
    mandatoryFeatures: host.mandatoryFeatures,
  }));
}

export function jobsFor(
  graph: BuildGraph,
  toBuild: ReadonlySet<string>,
  durations: DurationModel,
): JobSpec[] {
  const jobs: JobSpec[] = [];
  for (const drvPath of toBuild) {
    const node = graph.nodes.get(drvPath);
    if (node === undefined) continue;
    jobs.push({
      drvPath,
      name: node.name,
      system: node.system,
      requiredFeatures: node.requiredFeatures,
      deps: [...node.inputDrvs.keys()].filter((input) => toBuild.has(input)),
      expectedSeconds: durations.estimate(node.name, node.system),
    });
  }
  return jobs;
}

export interface CoordinatorOptions {
  readonly fleet: Fleet;
  /** A promise: evaluation may still run while connections to the builders open. */
  readonly drvPaths: readonly string[] | Promise<readonly string[]>;
  readonly durations: DurationModel;
  readonly storeRoot?: string | undefined;
  /** A cache token (FIRN_TOKEN): for a private cache's missing-paths query. */
  readonly token?: string | undefined;
  /** Skip the cache check (build everything not already valid on the builder). */
  readonly noCacheCheck?: boolean;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: SchedulerEvent) => void;
  readonly env?: NodeJS.ProcessEnv;
  /** Told what will be built, once, before the first build starts. */
  readonly onPlan?: (jobs: readonly JobSpec[], builders: readonly BuilderSpec[]) => void;
  /** Open connections to every builder before knowing what to build (default true). */
  readonly prewarm?: boolean;
}

export interface BuildOutcome {
  readonly graph: BuildGraph;
  /** Derivations whose outputs the cache already had. */
  readonly cached: ReadonlySet<string>;
  readonly jobs: readonly JobSpec[];
  readonly result: ScheduleResult;
  /** Expected critical path (drv paths), from the durations known before the build. */
  readonly criticalPath: readonly string[];
  /** Output paths of the requested derivations, one per output, in request order. */
  readonly outputs: readonly string[];
}

export async function coordinate(options: CoordinatorOptions): Promise<BuildOutcome> {
  trace('coordinate-start');
  const { fleet } = options;
  const cacheUrl = fleet.cache?.url;
  const builders = builderSpecs(fleet);
  // Private (mkdtemp makes it 0700): pinned host keys and the ssh control sockets.
  const sshDir = mkdtempSync(join(tmpdir(), 'firn-build-'));
  const pool = new BuilderPool({
    targets: new Map(buildersOf(fleet).map((host) => [host.name, sshTarget(host, sshDir)])),
    controlDir: sshDir,
    pushUrl: cacheUrl,
    storeRoot: options.storeRoot,
    ...(options.env === undefined ? {} : { env: options.env }),
  });
  try {
    // ssh handshakes overlap evaluation and the cache check.
    if (options.prewarm !== false) pool.prewarm(builders.map((builder) => builder.name));
    trace('prewarm-started');
    const drvPaths = await options.drvPaths;
    const graph = await readGraph(drvPaths, { storeRoot: options.storeRoot });
    trace('graph-read');
    const query =
      options.noCacheCheck === true || cacheUrl === undefined
        ? undefined
        : firnCacheQuery(cacheUrl, { token: options.token });
    const { toBuild, cached } = await pruneCached(graph, query);
    trace('cache-checked');
    const jobs = jobsFor(graph, toBuild, options.durations);
    pool.useGraph(graph);
    options.onPlan?.(jobs, builders);
    const speed = new Map(builders.map((b) => [b.name, b.speedFactor]));
    const byPath = new Map(jobs.map((job) => [job.drvPath, job]));
    const result = await schedule({
      jobs,
      builders,
      executor: pool,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      onEvent(event) {
        if (event.type === 'built') {
          const job = byPath.get(event.drvPath);
          if (job !== undefined) {
            options.durations.record(
              job.name,
              job.system,
              event.seconds * (speed.get(event.builder) ?? 1),
            );
          }
        }
        options.onEvent?.(event);
      },
    });
    const outputs = graph.roots.flatMap((root) =>
      [...(graph.nodes.get(root)?.outputs.values() ?? [])].filter((path) => path !== ''),
    );
    trace('scheduled');
    return { graph, cached, jobs, result, criticalPath: criticalPath(jobs), outputs };
  } finally {
    await pool.close();
    rmSync(sshDir, { recursive: true, force: true });
  }
}

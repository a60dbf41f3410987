/**
 * `firn build` against Nix's own remote builders on the same test fleet, in the same run.
 *
 *   node bench/build.ts                      # board graph ×2 and the random graph (~4 min)
 *   FIRN_BENCH_QUICK=1 node bench/build.ts   # a quarter of the durations, no Nix on the random graph
 *   FIRN_BENCH_SIMULATE_ONLY=1 node bench/build.ts   # only the random-graph simulation (1 s)
 *   FIRN_BENCH_COMPARE=/old/checkout/bin/firn node bench/build.ts   # also time another firn
 *
 * The fleet: three hosts standing in for aarch64 boards (extra-platforms), 2 jobs each, a
 * loopback firn cache. Every derivation runs `sleep` under /bin/sh, fresh salt per run.
 *
 * 1. The board graph: a 1 s config → 8 s kernel → 1 s modules chain beside twelve 2 s packages.
 *    Lower bound: the larger of the critical path (10 s) and total work / slots (34 s / 6).
 * 2. A 200-derivation random graph (seeded, the same in every run): 8 layers of 25, each with
 *    up to 3 inputs from earlier layers; 0.2–1.6 s each, one in twenty 4–10 s. firn's duration
 *    history is seeded with the true durations, as after an earlier run of the same graph.
 *
 * - firn: `firn build --fleet … -f FILE` (builders substitute from and push to the cache).
 * - Nix: `nix-build FILE --max-jobs 0 --builders @machines` from a chroot store, the three
 *   hosts as `ssh://` builders with the same slots (Nix copies inputs up and outputs back).
 *
 * Then the scheduler alone on 200-derivation random graphs with a fake clock: critical-path
 * priority against depth-only and no priority, each against the lower bound.
 *
 * Fleet runs are timed as whole commands (process start included); CPU time and peak RSS come
 * from /usr/bin/time. Prints a markdown report on stdout; progress on stderr.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteDurations } from '../src/build/durations.ts';
import { FakeClock, FakeExecutor } from '../src/build/fake-clock.ts';
import { schedule, type BuilderSpec, type JobSpec } from '../src/build/scheduler.ts';
import { run } from '../src/process/run.ts';
import { startBuildFleet } from '../test/build/build-fleet.ts';
import { FIRN_BIN } from '../test/helpers/firn.ts';
import { makeNixEnv } from '../test/helpers/nix.ts';

const QUICK = process.env.FIRN_BENCH_QUICK === '1';
const SCALE = QUICK ? 0.25 : 1;
const REPS = Number(process.env.FIRN_BENCH_REPS ?? (QUICK ? 1 : 2));
/** Another firn (e.g. an older checkout's bin/firn) timed beside this one. */
const COMPARE = process.env.FIRN_BENCH_COMPARE;
const BOARDS = ['opi01', 'opi02', 'opi03'];
const SLOTS = 2;

function note(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

/** The step every derivation runs: sleep, then write its name and the run's salt. */
const STEP = `step = builtins.toFile "step.sh" ''
    sleep "$1"
    echo "$name $salt" > $out
  '';`;

function boardExpr(salt: string): string {
  const s = (seconds: number): string => JSON.stringify(String(seconds * SCALE));
  return `
let
  ${STEP}
  mk = name: seconds: extra: derivation ({
    inherit name salt; system = "aarch64-linux"; builder = "/bin/sh";
    args = [ step seconds ]; PATH = "/bin:/usr/bin";
  } // extra);
  salt = "${salt}";
  config = mk "config" ${s(1)} {};
  kernel = mk "kernel-6.1" ${s(8)} { inherit config; };
  modules = mk "modules" ${s(1)} { inherit kernel; };
  pkg = i: { name = "pkg\${toString i}"; value = mk "pkg\${toString i}-1.0" ${s(2)} {}; };
in { inherit modules; } // builtins.listToAttrs (map pkg [ 1 2 3 4 5 6 7 8 9 10 11 12 ])
`;
}

interface Timed {
  readonly seconds: number;
  readonly cpu: number;
  readonly rssMiB: number;
}

/** Runs under /usr/bin/time; the last stderr line is "elapsed user system maxrss-KiB". */
async function timed(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<Timed> {
  const result = await run('/usr/bin/time', ['-f', '%e %U %S %M', command, ...args], { env });
  const last = result.stderr.trim().split('\n').at(-1) ?? '';
  if (result.code !== 0)
    throw new Error(`${command} failed (${result.code}):\n${result.stderr.slice(-3000)}`);
  const [elapsed, user, system, rss] = last.split(' ').map(Number);
  return {
    seconds: elapsed ?? NaN,
    cpu: (user ?? 0) + (system ?? 0),
    rssMiB: (rss ?? 0) / 1024,
  };
}

/** A seeded PRNG (mulberry32), so the random graph is the same in every run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface RandomGraph {
  readonly jobs: JobSpec[];
  readonly seconds: Map<string, number>;
}

/**
 * 200 derivations in 8 layers of 25; each depends on up to 3 derivations of earlier layers;
 * durations from `duration`.
 */
function randomGraph(seed: number, duration: (next: () => number) => number): RandomGraph {
  const next = random(seed);
  const jobs: JobSpec[] = [];
  const seconds = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const deps = new Set<string>();
    const earlier = Math.floor(i / 25) * 25;
    const fanIn = earlier === 0 ? 0 : Math.floor(next() * 4);
    for (let k = 0; k < fanIn; k++) deps.add(`r${Math.floor(next() * earlier)}`);
    const d = duration(next);
    seconds.set(`r${i}`, d);
    jobs.push({
      drvPath: `r${i}`,
      name: `r${i}`,
      system: 'aarch64-linux',
      requiredFeatures: [],
      deps: [...deps],
      expectedSeconds: d,
    });
  }
  return { jobs, seconds };
}

/** The larger of the critical path and total work / slots. */
function lowerBound(graph: RandomGraph, slots: number): number {
  const chain = new Map<string, number>();
  let work = 0;
  for (const job of graph.jobs) {
    const own = graph.seconds.get(job.drvPath) ?? 0;
    work += own;
    chain.set(job.drvPath, own + Math.max(0, ...job.deps.map((d) => chain.get(d) ?? 0)));
  }
  return Math.max(Math.max(...chain.values()), work / slots);
}

/** The simulation's graphs: 1–60 s, one in twenty 2–10 min. */
const simulatedDuration = (next: () => number): number =>
  next() < 0.05 ? 120 + next() * 480 : 1 + next() * 59;

/** The fleet's graph: 0.2–1.6 s, one in twenty 4–10 s (times SCALE), to tenths of a second. */
const fleetDuration = (next: () => number): number =>
  Math.round((next() < 0.05 ? 4 + next() * 6 : 0.2 + next() * 1.4) * SCALE * 10) / 10 || 0.1;

const FLEET_SEED = 7;

function randomExpr(graph: RandomGraph, salt: string): string {
  const lines = graph.jobs.map(
    (job) =>
      `  ${job.name} = mk "${job.name}" "${graph.seconds.get(job.drvPath)}" [ ${job.deps.join(' ')} ];`,
  );
  return `
let
  ${STEP}
  salt = "${salt}";
  mk = name: seconds: deps: derivation {
    inherit name salt deps; system = "aarch64-linux"; builder = "/bin/sh";
    args = [ step seconds ]; PATH = "/bin:/usr/bin";
  };
${lines.join('\n')}
in { inherit ${graph.jobs.map((job) => job.name).join(' ')}; }
`;
}

/**
 * The scheduler alone on a fake clock, with exact durations: critical-path priority against
 * depth only (every job counts 1, like Hydra's step counting) and no priority at all.
 */
async function simulateRandom(): Promise<string[]> {
  const builders: BuilderSpec[] = BOARDS.map((name) => ({
    name,
    systems: ['aarch64-linux'],
    maxJobs: 6,
    speedFactor: 1,
    features: [],
    mandatoryFeatures: [],
  }));
  const rows: string[] = [];
  for (const seed of [1, 2, 3]) {
    const graph = randomGraph(seed, simulatedDuration);
    const { jobs, seconds } = graph;
    const bound = lowerBound(graph, 18);
    const makespan = async (estimate: (job: JobSpec) => number): Promise<number> => {
      const clock = new FakeClock();
      const executor = new FakeExecutor(clock, (job) => seconds.get(job.drvPath) ?? 0);
      const result = await clock.run(
        schedule({
          jobs: jobs.map((job) => ({ ...job, expectedSeconds: estimate(job) })),
          builders,
          executor,
          clock,
        }),
      );
      return result.wallMs / 1000;
    };
    const critical = await makespan((job) => seconds.get(job.drvPath) ?? 0);
    const depth = await makespan(() => 1);
    const none = await makespan(() => 0);
    rows.push(
      `| ${seed} | ${bound.toFixed(0)} s | ${critical.toFixed(0)} s (${(critical / bound).toFixed(2)}) | ${depth.toFixed(0)} s (${(depth / bound).toFixed(2)}) | ${none.toFixed(0)} s (${(none / bound).toFixed(2)}) |`,
    );
  }
  return [
    '## 200-derivation random graphs, scheduler on a fake clock',
    '',
    'Three builders × 6 slots; 8 layers of 25, up to 3 inputs each from earlier layers; durations 1–60 s, one in twenty 2–10 min; exact durations known. Makespan (× lower bound).',
    '',
    '| seed | lower bound | critical path (firn) | depth only | no priority |',
    '| --- | --- | --- | --- | --- |',
    ...rows,
    '',
  ];
}

type Who = 'firn' | 'baseline' | 'nix';

interface Rows {
  readonly bound: number;
  readonly runs: ReadonlyMap<Who, readonly Timed[]>;
}

/** Markdown rows: best run of each, × the lower bound, CPU and RSS of that run. */
function table(rows: Rows): string[] {
  const label: Record<Who, string> = {
    firn: 'firn build',
    baseline: `firn build (${COMPARE ?? 'baseline'})`,
    nix: 'nix-build --builders',
  };
  const lines = [
    '| | makespan | × lower bound | CPU (coordinator) | peak RSS |',
    '| --- | --- | --- | --- | --- |',
    `| lower bound | ${rows.bound.toFixed(1)} s | 1.00 | | |`,
  ];
  for (const [who, runs] of rows.runs) {
    if (runs.length === 0) continue;
    const best = runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    lines.push(
      `| ${label[who]} | ${best.seconds.toFixed(1)} s | ${(best.seconds / rows.bound).toFixed(2)} | ${best.cpu.toFixed(2)} s | ${best.rssMiB.toFixed(0)} MiB |`,
    );
  }
  const all = [...rows.runs]
    .filter(([, runs]) => runs.length > 0)
    .map(([who, runs]) => `${who} ${runs.map((r) => r.seconds).join(', ')} s`);
  return [...lines, '', `All runs: ${all.join('; ')}.`, ''];
}

async function main(): Promise<void> {
  const simulated = await simulateRandom();
  if (process.env.FIRN_BENCH_SIMULATE_ONLY === '1') {
    process.stdout.write(simulated.join('\n'));
    return;
  }
  const work = mkdtempSync(join(tmpdir(), 'firn-bench-build-'));
  const nix = makeNixEnv('sandbox-paths = /bin /lib /lib64 /usr');
  await using setup = await startBuildFleet({ boards: BOARDS, maxJobs: SLOTS, work });
  const { fleet, inventory } = setup;
  try {
    const machines = join(work, 'machines');
    writeFileSync(
      machines,
      fleet.hosts
        .map(
          (host) => `ssh://root@${host.address} aarch64-linux ${fleet.clientKey} ${SLOTS} 1 - - -`,
        )
        .join('\n') + '\n',
    );
    const nixEnv = { ...nix.env, NIX_SSHOPTS: `-F ${fleet.sshConfig}` };
    const contenders: Who[] = COMPARE === undefined ? ['firn', 'nix'] : ['firn', 'baseline', 'nix'];

    /** One timed run of `who` on a fresh copy (new salt) of the expression. */
    const once = async (
      who: Who,
      label: string,
      expr: (salt: string) => string,
      history: string,
    ): Promise<Timed> => {
      const file = join(work, `${label}-${who}-${randomUUID()}.nix`);
      writeFileSync(file, expr(randomUUID()));
      const result =
        who === 'nix'
          ? await timed(
              'nix-build',
              [
                '--store',
                join(work, 'store-nix'),
                '--no-out-link',
                '--max-jobs',
                '0',
                '--builders',
                `@${machines}`,
                file,
              ],
              nixEnv,
            )
          : await timed(
              who === 'firn' ? FIRN_BIN : (COMPARE ?? FIRN_BIN),
              [
                'build',
                '--fleet',
                inventory,
                '--store',
                join(work, `store-${who}`),
                '--history',
                history,
                '-f',
                file,
              ],
              nix.env,
            );
      note(`${label}: ${who} ${result.seconds} s`);
      return result;
    };

    const board = new Map<Who, Timed[]>(contenders.map((who) => [who, []]));
    for (let rep = 0; rep < REPS; rep++) {
      // Rotate who goes first, so no one always meets warmer caches.
      const order = contenders.map((_, i) => contenders[(i + rep) % contenders.length] ?? 'nix');
      for (const who of order) {
        board
          .get(who)
          ?.push(await once(who, 'board', boardExpr, join(work, `history-${who}.sqlite`)));
      }
    }

    // The random graph: the history already knows every duration (as after an earlier run).
    const graph = randomGraph(FLEET_SEED, fleetDuration);
    const randomBound = lowerBound(graph, BOARDS.length * SLOTS);
    // Nix pays seconds per derivation whatever its duration: in quick mode it sits this out.
    const randomContenders = QUICK ? contenders.filter((who) => who !== 'nix') : contenders;
    const random = new Map<Who, Timed[]>(randomContenders.map((who) => [who, []]));
    for (const who of randomContenders) {
      const history = join(work, `history-random-${who}.sqlite`);
      if (who !== 'nix') {
        const durations = new SqliteDurations(history);
        for (const job of graph.jobs) {
          durations.record(job.name, job.system, graph.seconds.get(job.drvPath) ?? 0);
        }
        durations.close();
      }
      random.get(who)?.push(await once(who, 'random', (salt) => randomExpr(graph, salt), history));
    }

    const work200 = [...graph.seconds.values()].reduce((a, b) => a + b, 0);
    const lines = [
      `# firn build vs Nix remote builders (${QUICK ? 'quick: durations × 0.25' : 'full durations'})`,
      '',
      `## The board graph`,
      '',
      `Three aarch64 stand-ins × ${SLOTS} jobs; config ${SCALE} s → kernel ${8 * SCALE} s → modules ${SCALE} s beside twelve ${2 * SCALE} s packages; best of ${REPS}.`,
      '',
      ...table({ bound: Math.max(10, 34 / (BOARDS.length * SLOTS)) * SCALE, runs: board }),
      `## A 200-derivation random graph on the fleet`,
      '',
      `Seed ${FLEET_SEED}: 8 layers of 25, up to 3 inputs each from earlier layers; ${work200.toFixed(0)} s of work in all; one run each.`,
      '',
      ...table({ bound: randomBound, runs: random }),
    ];
    process.stdout.write([...lines, ...simulated].join('\n'));
  } finally {
    nix[Symbol.dispose]();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();

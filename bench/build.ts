/**
 * `firn build` against Nix's own remote builders on the same test fleet, in the same run.
 *
 *   node bench/build.ts                      # the board graph (~1 min)
 *   FIRN_BENCH_QUICK=1 node bench/build.ts   # the same graph at a quarter of the durations
 *   FIRN_BENCH_SIMULATE_ONLY=1 node bench/build.ts   # only the random-graph simulation (1 s)
 *
 * The fleet: three hosts standing in for aarch64 boards (extra-platforms), 2 jobs each, a
 * loopback firn cache. The graph: a 1 s config → 8 s kernel → 1 s modules chain beside twelve
 * 2 s packages (builder /bin/sh with sleep), fresh salt per run. The lower bound is the larger
 * of the critical path (10 s) and total work / slots (34 s / 6).
 *
 * - firn: `firn build --fleet … -f board.nix` (builders substitute from and push to the cache).
 * - Nix: `nix-build board.nix --max-jobs 0 --builders @machines` from a chroot store, the three
 *   hosts as `ssh://` builders with the same slots (Nix copies inputs up and outputs back).
 *
 * Then the scheduler alone on 200-derivation random graphs with a fake clock: critical-path
 * priority against depth-only and no priority, each against the lower bound.
 *
 * Both fleet runs are timed as whole commands (process start included); firn's CPU time and peak RSS come
 * from /usr/bin/time. Prints a markdown report on stdout; progress on stderr.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeClock, FakeExecutor } from '../src/build/fake-clock.ts';
import { schedule, type BuilderSpec, type JobSpec } from '../src/build/scheduler.ts';
import { run } from '../src/process/run.ts';
import { startFleet } from '../test/fleet/fleet.ts';
import { FIRN_BIN } from '../test/helpers/firn.ts';
import { makeNixEnv } from '../test/helpers/nix.ts';
import { startTestServer } from '../test/helpers/server.ts';

const QUICK = process.env.FIRN_BENCH_QUICK === '1';
const SCALE = QUICK ? 0.25 : 1;
const REPS = Number(process.env.FIRN_BENCH_REPS ?? (QUICK ? 1 : 2));
const BOARDS = ['opi01', 'opi02', 'opi03'];
const SLOTS = 2;

function note(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

function boardExpr(salt: string): string {
  const s = (seconds: number): string => JSON.stringify(String(seconds * SCALE));
  return `
let
  step = builtins.toFile "step.sh" ''
    sleep "$1"
    echo "$name $salt" > $out
  '';
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

/**
 * 200 derivations in 8 layers of 25; each depends on up to 3 derivations of earlier layers;
 * durations 1–60 s, one in twenty 2–10 min.
 */
function randomGraph(seed: number): { jobs: JobSpec[]; seconds: Map<string, number> } {
  const next = random(seed);
  const jobs: JobSpec[] = [];
  const seconds = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const deps = new Set<string>();
    const earlier = Math.floor(i / 25) * 25;
    const fanIn = earlier === 0 ? 0 : Math.floor(next() * 4);
    for (let k = 0; k < fanIn; k++) deps.add(`d${Math.floor(next() * earlier)}`);
    const duration = next() < 0.05 ? 120 + next() * 480 : 1 + next() * 59;
    seconds.set(`d${i}`, duration);
    jobs.push({
      drvPath: `d${i}`,
      name: `d${i}`,
      system: 'aarch64-linux',
      requiredFeatures: [],
      deps: [...deps],
      expectedSeconds: duration,
    });
  }
  return { jobs, seconds };
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
    const { jobs, seconds } = randomGraph(seed);
    const work = [...seconds.values()].reduce((a, b) => a + b, 0);
    const chain = new Map<string, number>();
    for (const job of jobs) {
      chain.set(
        job.drvPath,
        (seconds.get(job.drvPath) ?? 0) + Math.max(0, ...job.deps.map((d) => chain.get(d) ?? 0)),
      );
    }
    const bound = Math.max(Math.max(...chain.values()), work / 18);
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

async function main(): Promise<void> {
  const simulated = await simulateRandom();
  if (process.env.FIRN_BENCH_SIMULATE_ONLY === '1') {
    process.stdout.write(simulated.join('\n'));
    return;
  }
  const work = mkdtempSync(join(tmpdir(), 'firn-bench-build-'));
  const nix = makeNixEnv('sandbox-paths = /bin /lib /lib64 /usr');
  await using server = await startTestServer();
  await using fleet = await startFleet({
    hosts: BOARDS.map((name) => ({ name, extraPlatforms: ['aarch64-linux'] })),
    cacheUrl: server.url,
    cachePublicKey: await server.publicKey(),
  });
  try {
    const token = await server.token('push');
    for (const host of fleet.hosts) {
      writeFileSync(
        host.path('conf', 'netrc'),
        `machine ${fleet.gateway} login firn password ${token}\n`,
      );
    }
    const inventory = fleet.writeInventory(join(work, 'firn.toml'), {
      hosts: Object.fromEntries(
        BOARDS.map((name) => [name, { systems: ['aarch64-linux'], 'max-jobs': SLOTS }]),
      ),
    });
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
    const firnRuns: Timed[] = [];
    const nixRuns: Timed[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      // Alternate who goes first, so neither always meets warmer caches.
      const order = rep % 2 === 0 ? ['firn', 'nix'] : ['nix', 'firn'];
      for (const who of order) {
        const file = join(work, `${who}-${rep}.nix`);
        writeFileSync(file, boardExpr(randomUUID()));
        if (who === 'firn') {
          const result = await timed(
            FIRN_BIN,
            [
              'build',
              '--fleet',
              inventory,
              '--store',
              join(work, 'store-firn'),
              '--history',
              join(work, 'history.sqlite'),
              '-f',
              file,
            ],
            nix.env,
          );
          note(`firn: ${result.seconds} s`);
          firnRuns.push(result);
        } else {
          const result = await timed(
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
          );
          note(`nix: ${result.seconds} s`);
          nixRuns.push(result);
        }
      }
    }
    const bound = Math.max(10, 34 / (BOARDS.length * SLOTS)) * SCALE;
    const best = (runs: Timed[]): Timed => runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    const f = best(firnRuns);
    const n = best(nixRuns);
    const lines = [
      `# firn build vs Nix remote builders (${QUICK ? 'quick: durations × 0.25' : 'board graph'})`,
      '',
      `Three aarch64 stand-ins × ${SLOTS} jobs; config ${SCALE} s → kernel ${8 * SCALE} s → modules ${SCALE} s beside twelve ${2 * SCALE} s packages; best of ${REPS}.`,
      '',
      '| | makespan | × lower bound | CPU (coordinator) | peak RSS |',
      '| --- | --- | --- | --- | --- |',
      `| lower bound | ${bound.toFixed(1)} s | 1.00 | | |`,
      `| firn build | ${f.seconds.toFixed(1)} s | ${(f.seconds / bound).toFixed(2)} | ${f.cpu.toFixed(2)} s | ${f.rssMiB.toFixed(0)} MiB |`,
      `| nix-build --builders | ${n.seconds.toFixed(1)} s | ${(n.seconds / bound).toFixed(2)} | ${n.cpu.toFixed(2)} s | ${n.rssMiB.toFixed(0)} MiB |`,
      '',
      `firn is ${(n.seconds / f.seconds).toFixed(2)}× faster than Nix here. All runs: firn ${firnRuns.map((r) => r.seconds).join(', ')} s; nix ${nixRuns.map((r) => r.seconds).join(', ')} s.`,
      '',
    ];
    process.stdout.write([...lines, ...simulated].join('\n'));
  } finally {
    nix[Symbol.dispose]();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();

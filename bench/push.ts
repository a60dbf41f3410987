/**
 * Uploads: `firn push` against `nix copy --to "http://…?compression=zstd"` into `firn serve`,
 * and the latency of `firn hook`, over loopback only.
 *
 *   node bench/push.ts                      # full run (a minute or two)
 *   FIRN_BENCH_QUICK=1 node bench/push.ts   # small smoke run
 *
 * Each repetition builds two fresh closures of the same shape (a few hundred small paths and a
 * few large incompressible ones, random salt) in a chroot store, starts a fresh server for each
 * uploader, and times the whole command (process start included). Which uploader goes first
 * alternates, so neither always meets a warmer page cache. Then `firn hook` is run 50 times in a
 * row, against `node -e 0` (Node's own start-up, the floor for any Node program) and
 * `firn --version` (start-up plus the CLI entry). Prints a markdown report on stdout.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIRN_BIN } from '../test/helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../test/helpers/nix.ts';
import { buildShape, cacheMissing, SANDBOX_PATHS, type Shape } from '../test/push/fixtures.ts';
import { startFirn } from './lib/firn-server.ts';
import { median, mustRun, requireTools, timedRun } from './lib/procs.ts';
import { machineFacts, ratio, table, yesNo, type Row } from './lib/report.ts';

const MiB = 1024 * 1024;
const QUICK = process.env.FIRN_BENCH_QUICK === '1';
const REPS = Number(process.env.FIRN_BENCH_REPS ?? (QUICK ? 1 : 3));
const SHAPE: Shape = QUICK
  ? { mids: 40, blobs: 1, blobBytes: 4 * MiB, extra: 0 }
  : { mids: 300, blobs: 3, blobBytes: 32 * MiB, extra: 0 };
const HOOK_CALLS = QUICK ? 15 : 50;

function note(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

interface Upload {
  readonly seconds: number;
  readonly paths: number;
  /** CPU seconds (user + system) of the uploader and of the server while it ran. */
  readonly clientCpu: number;
  readonly serverCpu: number;
}

const CLOCK_TICKS = 100;

/** utime + stime (fields 14, 15) or cutime + cstime (16, 17) of /proc/<pid>/stat, in seconds. */
function statCpu(stat: string, children: boolean): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const at = children ? 13 : 11;
  return (Number(fields[at]) + Number(fields[at + 1])) / CLOCK_TICKS;
}

function processCpu(pid: number): number {
  return statCpu(readFileSync(`/proc/${pid}/stat`, 'utf8'), false);
}

/** Runs a command under sh, which reports on stderr the CPU time of the children it waited for. */
async function runWithCpu(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ seconds: number; cpu: number }> {
  const exit = await mustRun(
    'sh',
    [
      '-c',
      '"$@"; code=$?; echo "CPU $(cat /proc/$$/stat)" >&2; exit $code',
      'sh',
      command,
      ...args,
    ],
    env,
  );
  const line = exit.stderr.split('\n').find((text) => text.startsWith('CPU ')) ?? '';
  return { seconds: exit.seconds, cpu: statCpu(line.slice(4), true) };
}

async function uploadWith(
  tool: 'firn' | 'nix',
  options: { dir: string; nix: NixEnv; store: string; root: string; paths: readonly string[] },
): Promise<Upload> {
  const dataDir = join(options.dir, `${tool}-data-${randomUUID()}`);
  const server = await startFirn({ dataDir, logFile: `${dataDir}.log`, logLevel: 'warn' });
  try {
    const token = await server.token('push', 'bench');
    const serverBefore = processCpu(server.pid);
    let exit;
    if (tool === 'firn') {
      exit = await runWithCpu(
        FIRN_BIN,
        ['push', '--cache', server.url, '--store', options.store, '--no-progress', options.root],
        { ...process.env, FIRN_TOKEN: token },
      );
    } else {
      const netrc = join(options.dir, `netrc-${randomUUID()}`);
      writeFileSync(netrc, `machine 127.0.0.1 login firn password ${token}\n`);
      exit = await runWithCpu(
        'nix',
        [
          'copy',
          '--store',
          options.store,
          '--option',
          'netrc-file',
          netrc,
          '--to',
          `${server.url}?compression=zstd`,
          options.root,
        ],
        options.nix.env,
      );
    }
    const serverCpu = processCpu(server.pid) - serverBefore;
    const missing = await cacheMissing(server.url, options.paths);
    if (missing.length > 0) throw new Error(`${tool} left ${missing.length} paths out`);
    return { seconds: exit.seconds, paths: options.paths.length, clientCpu: exit.cpu, serverCpu };
  } finally {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function hookLatency(
  dir: string,
): Promise<{ hook: number[]; node: number[]; version: number[] }> {
  const spool = join(dir, 'spool');
  const env = {
    ...process.env,
    FIRN_SPOOL: spool,
    OUT_PATHS: '/nix/store/0c7qrfbfwgc0ngbp6zs6rzpfkqa3djsl-hello-2.12',
    DRV_PATH: '/nix/store/1qsvxx0cyqqmvy7mh5ak1lkvqyyb0q9y-hello-2.12.drv',
  };
  const hook: number[] = [];
  const node: number[] = [];
  const version: number[] = [];
  // Warm the compile cache first, like every machine that has run firn once.
  await mustRun(FIRN_BIN, ['hook'], env);
  for (let i = 0; i < HOOK_CALLS; i++) {
    hook.push((await mustRun(FIRN_BIN, ['hook'], env)).seconds * 1000);
    node.push((await mustRun(process.execPath, ['-e', '0'])).seconds * 1000);
    version.push((await mustRun(FIRN_BIN, ['--version'])).seconds * 1000);
  }
  const failed = (await timedRun(FIRN_BIN, ['hook'], { ...env, FIRN_SPOOL: '/proc/firn-no-spool' }))
    .code;
  if (failed !== 0) throw new Error(`firn hook exited ${failed} on a broken spool`);
  return { hook, node, version };
}

interface Comparison {
  readonly paths: number;
  readonly firnTimes: number[];
  readonly nixTimes: number[];
  readonly cpu: Record<'firn' | 'nix', { client: number[]; server: number[] }>;
}

/** firn push and nix copy on fresh closures of `shape`, alternating which goes first. */
async function compare(dir: string, nix: NixEnv, shape: Shape): Promise<Comparison> {
  const store = join(dir, 'store');
  const result: Comparison = {
    paths: 0,
    firnTimes: [],
    nixTimes: [],
    cpu: { firn: { client: [], server: [] }, nix: { client: [], server: [] } },
  };
  let paths = 0;
  for (let rep = 0; rep < REPS; rep++) {
    const closures = [
      await buildShape(nix, { dir, store, salt: randomUUID(), shape }),
      await buildShape(nix, { dir, store, salt: randomUUID(), shape }),
    ];
    paths = closures[0]?.paths.length ?? 0;
    const order = rep % 2 === 0 ? (['firn', 'nix'] as const) : (['nix', 'firn'] as const);
    for (const [index, tool] of order.entries()) {
      const closure = closures[index];
      if (closure === undefined) continue;
      const upload = await uploadWith(tool, {
        dir,
        nix,
        store,
        root: closure.top,
        paths: closure.paths,
      });
      note(
        `${shape.blobText === true ? 'text' : 'random'} blobs, rep ${rep + 1}: ${tool} ${upload.seconds.toFixed(2)} s for ${upload.paths} paths; CPU: client ${upload.clientCpu.toFixed(2)} s, server ${upload.serverCpu.toFixed(2)} s`,
      );
      (tool === 'firn' ? result.firnTimes : result.nixTimes).push(upload.seconds);
      result.cpu[tool].client.push(upload.clientCpu);
      result.cpu[tool].server.push(upload.serverCpu);
    }
  }
  return { ...result, paths };
}

function comparisonRows(label: string, run: Comparison): Row[] {
  const firnMedian = median(run.firnTimes);
  const nixMedian = median(run.nixTimes);
  const cpu = (tool: 'firn' | 'nix'): string =>
    `${median(run.cpu[tool].client).toFixed(2)} + ${median(run.cpu[tool].server).toFixed(2)}`;
  return [
    {
      metric: `upload ${run.paths} paths (${SHAPE.mids} small, ${SHAPE.blobs} × ${SHAPE.blobBytes / MiB} MiB ${label}), s`,
      firn: firnMedian.toFixed(2),
      reference: `${nixMedian.toFixed(2)} (nix copy, zstd)`,
      ratio: ratio(firnMedian, nixMedian),
      goal: '≤ 0.5×',
      met: yesNo(firnMedian <= 0.5 * nixMedian),
    },
    {
      metric: `same uploads (${label}): CPU s of uploader + server (median)`,
      firn: cpu('firn'),
      reference: cpu('nix'),
      ratio: ratio(
        median(run.cpu.firn.client) + median(run.cpu.firn.server),
        median(run.cpu.nix.client) + median(run.cpu.nix.server),
      ),
      goal: '(context)',
      met: '—',
    },
  ];
}

function comparisonLines(label: string, run: Comparison): string[] {
  const perPath = (tool: 'firn' | 'nix'): string =>
    ((median(run.cpu[tool].server) * 1e3) / run.paths).toFixed(2);
  const list = (values: number[]): string => values.map((s) => s.toFixed(2)).join(', ');
  return [
    `- ${label}: upload runs (s): firn ${list(run.firnTimes)}; nix copy ${list(run.nixTimes)}`,
    `- ${label}: server CPU per path (ms, median): firn push ${perPath('firn')}, nix copy ${perPath('nix')}; server CPU per run (s): firn push ${list(run.cpu.firn.server)}; nix copy ${list(run.cpu.nix.server)}`,
  ];
}

async function main(): Promise<void> {
  requireTools([
    { command: 'nix', pkg: 'nix-bin' },
    { command: 'nix-build', pkg: 'nix-bin' },
  ]);
  const dir = mkdtempSync(join(tmpdir(), 'firn-bench-push-'));
  const nix = makeNixEnv(`extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}\nmax-jobs = 8`);
  try {
    // Random blobs: zstd cannot shrink them (firn sends them as they are, nix copy compresses).
    // Text blobs: both compress them, so only the rest of the difference shows.
    const random = await compare(dir, nix, SHAPE);
    const text = await compare(dir, nix, { ...SHAPE, blobText: true });
    const latency = await hookLatency(dir);
    const hookMedian = median(latency.hook);
    const nodeMedian = median(latency.node);
    const rows: Row[] = [
      ...comparisonRows('random', random),
      ...comparisonRows('base64 text', text),
      {
        metric: `firn hook latency, median of ${HOOK_CALLS}, ms`,
        firn: hookMedian.toFixed(1),
        reference: `${nodeMedian.toFixed(1)} (node -e 0)`,
        ratio: ratio(hookMedian, nodeMedian),
        goal: '≤ 50 ms',
        met: yesNo(hookMedian <= 50),
      },
    ];
    const sorted = [...latency.hook].sort((a, b) => a - b);
    const p90 = sorted[Math.floor(sorted.length * 0.9)] ?? NaN;
    process.stdout.write(
      [
        '## firn push and firn hook',
        '',
        table(rows),
        '',
        ...comparisonLines('random blobs', random),
        ...comparisonLines('text blobs', text),
        `- hook latency: median ${hookMedian.toFixed(1)} ms, p90 ${p90.toFixed(1)} ms; \`node -e 0\` ${nodeMedian.toFixed(1)} ms; \`firn --version\` ${median(latency.version).toFixed(1)} ms`,
        ...machineFacts(),
        '',
      ].join('\n'),
    );
  } finally {
    nix[Symbol.dispose]();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();

/**
 * NAR packing and hashing: firn against Nix on the same trees, in the same run.
 *
 *   node bench/nar-pack.ts [--reps N] [--dir DIR] [--compile-cache]
 *
 * Builds (a) a tree holding one 1 GiB file and (b) a tree of 50,000 small files in nested
 * directories, then times `firn hash path` vs `nix hash path` and `firn nar pack > /dev/null`
 * vs `nix-store --dump > /dev/null` (median of N runs, interleaved, after one warm-up run each)
 * and records peak RSS. Prints a markdown table. Needs nix-store and nix on PATH.
 * --compile-cache runs firn with NODE_COMPILE_CACHE set (a temp dir), which skips TypeScript
 * stripping at startup; without it firn runs exactly as bin/firn starts it.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const FIRN = fileURLToPath(new URL('../bin/firn', import.meta.url));
const TIME = '/usr/bin/time';
const MiB = 1024 * 1024;

const { values } = parseArgs({
  options: {
    reps: { type: 'string', default: '5' },
    dir: { type: 'string' },
    'compile-cache': { type: 'boolean', default: false },
  },
});
const REPS = Number(values.reps);

/** One 1 GiB file: a random 1 MiB block repeated, each copy stamped with its index. */
function makeBigTree(root: string): void {
  mkdirSync(root);
  const block = randomBytes(MiB);
  const fd = openSync(join(root, 'big.bin'), 'w', 0o644);
  try {
    for (let i = 0; i < 1024; i++) {
      block.writeUInt32LE(i, 0);
      writeSync(fd, block);
    }
  } finally {
    closeSync(fd);
  }
}

/** 50,000 files of 0–4 KiB (every tenth executable) in 50 × 10 directories. */
function makeSmallTree(root: string): void {
  const pool = randomBytes(MiB);
  let n = 0;
  for (let a = 0; a < 50; a++) {
    for (let b = 0; b < 10; b++) {
      const dir = join(root, `dir-${a}`, `sub-${b}`);
      mkdirSync(dir, { recursive: true });
      for (let c = 0; c < 100; c++, n++) {
        const size = (n * 7919) % 4097;
        const at = (n * 104729) % (pool.length - size);
        writeFileSync(join(dir, `file-${c}`), pool.subarray(at, at + size), {
          mode: c % 10 === 0 ? 0o755 : 0o644,
        });
      }
    }
  }
}

interface Sample {
  readonly seconds: number;
  /** Peak RSS in MB, if it could be measured. */
  readonly rssMb: number | undefined;
}

const haveTime = existsSync(TIME);

/** Peak RSS of a running process from /proc, polled (used only without /usr/bin/time). */
function pollPeakRss(pid: number, peak: { kb: number }): NodeJS.Timeout {
  return setInterval(() => {
    try {
      const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (match?.[1] !== undefined) peak.kb = Math.max(peak.kb, Number(match[1]));
    } catch {
      // the process has exited
    }
  }, 5);
}

/** Runs `command` with stdout to /dev/null and returns its wall time and peak RSS. */
function measure(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<Sample> {
  const devNull = openSync('/dev/null', 'w');
  const [file, argv] = haveTime ? [TIME, ['-f', '%M', command, ...args]] : [command, [...args]];
  const start = performance.now();
  const child = spawn(file, argv, { stdio: ['ignore', devNull, 'pipe'], env });
  closeSync(devNull);
  const peak = { kb: 0 };
  const poll = haveTime || child.pid === undefined ? undefined : pollPeakRss(child.pid, peak);
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = (performance.now() - start) / 1000;
      if (poll !== undefined) clearInterval(poll);
      if (code !== 0) {
        reject(new Error(`${command} ${args.join(' ')} failed (${String(code)}): ${stderr}`));
        return;
      }
      const kb = haveTime ? Number(stderr.trim().split('\n').at(-1)) : peak.kb;
      resolve({ seconds, rssMb: Number.isFinite(kb) && kb > 0 ? kb / 1024 : undefined });
    });
  });
}

function median(numbers: readonly number[]): number {
  const sorted = [...numbers].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? 0)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

interface Row {
  readonly name: string;
  readonly firn: readonly Sample[];
  readonly nix: readonly Sample[];
}

interface Envs {
  readonly firn: NodeJS.ProcessEnv;
  readonly nix: NodeJS.ProcessEnv;
}

async function compare(
  name: string,
  firn: readonly string[],
  nix: readonly [string, ...string[]],
  envs: Envs,
): Promise<Row> {
  await measure(FIRN, firn, envs.firn); // warm-up: page cache, compile caches
  await measure(nix[0], nix.slice(1), envs.nix);
  const ours: Sample[] = [];
  const theirs: Sample[] = [];
  for (let i = 0; i < REPS; i++) {
    ours.push(await measure(FIRN, firn, envs.firn));
    theirs.push(await measure(nix[0], nix.slice(1), envs.nix));
  }
  process.stderr.write(`  ${name}: done\n`);
  return { name, firn: ours, nix: theirs };
}

function peak(samples: readonly Sample[]): string {
  const values = samples.flatMap((s) => (s.rssMb === undefined ? [] : [s.rssMb]));
  return values.length === 0 ? 'n/a' : Math.max(...values).toFixed(0);
}

function table(rows: readonly Row[]): string {
  const lines = [
    `| case | firn (s) | nix (s) | firn/nix | firn peak RSS (MB) | nix peak RSS (MB) |`,
    `| --- | ---: | ---: | ---: | ---: | ---: |`,
  ];
  for (const row of rows) {
    const ours = median(row.firn.map((s) => s.seconds));
    const theirs = median(row.nix.map((s) => s.seconds));
    lines.push(
      `| ${row.name} | ${ours.toFixed(3)} | ${theirs.toFixed(3)} | ${(ours / theirs).toFixed(2)} | ${peak(row.firn)} | ${peak(row.nix)} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(values.dir ?? tmpdir(), 'firn-bench-nar-'));
  const cleanup = (): void => {
    rmSync(root, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    const env = { ...process.env, NIX_CONFIG: 'experimental-features = nix-command' };
    const firnEnv = values['compile-cache']
      ? { ...env, NODE_COMPILE_CACHE: join(root, 'node-cache') }
      : env;
    const envs: Envs = { firn: firnEnv, nix: env };
    const big = join(root, 'big');
    const small = join(root, 'small');
    process.stderr.write(`building trees in ${root}\n`);
    makeBigTree(big);
    makeSmallTree(small);
    const rows: Row[] = [];
    for (const [label, path] of [
      ['1 GiB file', big],
      ['50,000 small files', small],
    ] as const) {
      rows.push(
        await compare(
          `hash path, ${label}`,
          ['hash', 'path', path],
          ['nix', 'hash', 'path', path],
          envs,
        ),
        await compare(
          `pack > /dev/null, ${label}`,
          ['nar', 'pack', path],
          ['nix-store', '--dump', path],
          envs,
        ),
      );
    }
    const nixVersion = await new Promise<string>((resolve) => {
      const child = spawn('nix', ['--version'], { env });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.on('close', () => {
        resolve(out.trim());
      });
      child.on('error', () => {
        resolve('nix (unknown version)');
      });
    });
    process.stdout.write(
      `NAR pack/hash, median of ${REPS} runs after a warm-up; node ${process.version}, ${nixVersion}; ` +
        `RSS via ${haveTime ? '/usr/bin/time -f %M' : '/proc/<pid>/status VmHWM polling'}` +
        `${values['compile-cache'] ? '; firn with NODE_COMPILE_CACHE' : ''}\n\n` +
        table(rows) +
        '\n',
    );
  } finally {
    cleanup();
  }
}

await main();

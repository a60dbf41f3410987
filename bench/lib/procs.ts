/** Small process helpers for benchmarks: tools on PATH, peak memory from /proc, timing, medians. */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** A program a benchmark needs, and the Debian package that brings it. */
export interface Tool {
  readonly command: string;
  readonly pkg: string;
}

/** Exits with one line per missing tool saying what to install. */
export function requireTools(tools: readonly Tool[]): void {
  const missing = tools.filter((tool) => !onPath(tool.command));
  if (missing.length === 0) return;
  process.stderr.write(
    `bench: missing ${missing.map((tool) => tool.command).join(', ')}.\n` +
      `Install them (Debian/Ubuntu): apt-get install -y ${[...new Set(missing.map((tool) => tool.pkg))].join(' ')}\n`,
  );
  process.exit(2);
}

export function onPath(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/** The first line a program prints (stdout, else stderr) for `args`, e.g. a version. */
export function firstLine(command: string, args: readonly string[]): string {
  const result = spawnSync(command, [...args], { encoding: 'utf8' });
  const text = result.stdout.trim() === '' ? result.stderr : result.stdout;
  return text.trim().split('\n')[0] ?? '';
}

/** A field of /proc/<pid>/status in kB (VmHWM is the peak resident set), or undefined once gone. */
export function procStatusKb(pid: number, field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
    return match?.[1] === undefined ? undefined : Number(match[1]);
  } catch {
    return undefined;
  }
}

export function procName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Direct children of a process (needs CONFIG_PROC_CHILDREN, which every distribution kernel has). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((field) => field !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * The node process behind a launcher: bin/firn execs node (same pid), but a wrapper that forks
 * it instead leaves node as a child, so look one level down too.
 */
export function nodePidOf(pid: number): number {
  if (procName(pid) === 'node') return pid;
  return childPids(pid).find((child) => procName(child) === 'node') ?? pid;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return NaN;
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? NaN)
    : ((sorted[middle - 1] ?? NaN) + (sorted[middle] ?? NaN)) / 2;
}

export interface Exit {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
}

/** Runs a program to completion, timing it; stdout is kept (small outputs only). */
export function timedRun(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, [...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr
      .setEncoding('utf8')
      .on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-16_384)));
    child.once('error', reject);
    child.once('close', (code) => {
      resolve({ code: code ?? -1, stdout, stderr, seconds: (performance.now() - started) / 1000 });
    });
  });
}

/** Like timedRun, but a failure ends the benchmark with the program's own words. */
export async function mustRun(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Exit> {
  const exit = await timedRun(command, args, env);
  if (exit.code !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed (exit ${exit.code}):\n${exit.stderr.trim().split('\n').slice(-12).join('\n')}`,
    );
  }
  return exit;
}

let clockTicks: number | undefined;

/** CPU time (user + system, all threads) a process has used so far, in seconds; 0 once gone. */
export function cpuSeconds(pid: number): number {
  clockTicks ??= Number(firstLine('getconf', ['CLK_TCK'])) || 100;
  try {
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return 0;
  }
}

/** The one-minute load average: other work on the machine skews every number here. */
export function loadAverage(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ')[0] ?? '?';
  } catch {
    return '?';
  }
}

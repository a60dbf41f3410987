/**
 * The real `firn serve` for benchmarks. Unlike test/helpers/server.ts its log goes straight to a
 * file (as it would to a journal), so a busy access log costs the server, not the benchmark.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { firn, FIRN_BIN } from '../../test/helpers/firn.ts';
import { freePort } from '../../test/helpers/server.ts';
import { nodePidOf, procStatusKb } from './procs.ts';

export interface BenchServer {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** The server's node process, whose VmHWM is its peak memory. */
  readonly pid: number;
  /** Highest VmHWM (kB) seen so far; call before stop() to keep the last reading. */
  peakKb(): number;
  token(scope: 'read' | 'push' | 'admin', name: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startFirn(options: {
  dataDir: string;
  logFile: string;
  logLevel: 'warn' | 'info';
  env?: NodeJS.ProcessEnv;
}): Promise<BenchServer> {
  const port = await freePort();
  const log = openSync(options.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(
      FIRN_BIN,
      [
        'serve',
        '--data',
        options.dataDir,
        '--listen',
        `127.0.0.1:${port}`,
        '--key-name',
        'bench-cache-1',
        '--log-level',
        options.logLevel,
      ],
      { stdio: ['ignore', log, log], env: { ...process.env, ...options.env } },
    );
  } finally {
    closeSync(log);
  }
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      resolve();
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  await waitUntilUp(url, child, options.logFile);
  const pid = nodePidOf(child.pid ?? 0);
  let peak = 0;
  const peakKb = (): number => {
    peak = Math.max(peak, procStatusKb(pid, 'VmHWM') ?? 0);
    return peak;
  };
  return {
    url,
    port,
    dataDir: options.dataDir,
    pid,
    peakKb,
    async token(scope, name) {
      const result = await firn([
        'cache',
        'token',
        'create',
        '--data',
        options.dataDir,
        '--name',
        name,
        '--scope',
        scope,
      ]);
      if (result.code !== 0) throw new Error(`firn cache token create failed: ${result.stderr}`);
      return result.stdout.toString('utf8').trim().split('\n').at(-1) ?? '';
    },
    async stop() {
      peakKb();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

async function waitUntilUp(url: string, child: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`firn serve exited early; see ${logFile}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`firn serve did not answer within 30 s; see ${logFile}`);
}

/**
 * Starts the real `firn serve` as a child process on a free loopback port with its own data
 * directory, waits until it answers, and kills it (and removes the directory) on dispose.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firn, FIRN_BIN } from './firn.ts';

export interface TestServer {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly child: ChildProcess;
  /** JSON log lines written so far. */
  readonly log: () => string;
  /** Makes a token with the given scope through the CLI and returns it. */
  token(scope: 'read' | 'push' | 'admin', name?: string): Promise<string>;
  publicKey(): Promise<string>;
  /** SIGKILL, no cleanup: for crash tests. The data directory stays. */
  kill(): Promise<void>;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => {
        resolve(port);
      });
    });
  });
}

let tokenCounter = 0;

export async function startTestServer(
  options: { dataDir?: string; args?: readonly string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<TestServer> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'firn-serve-'));
  const port = await freePort();
  const child = spawn(
    FIRN_BIN,
    [
      'serve',
      '--data',
      dataDir,
      '--listen',
      `127.0.0.1:${port}`,
      '--key-name',
      'test-cache-1',
      ...(options.args ?? []),
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
    },
  );
  let log = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const url = `http://127.0.0.1:${port}`;
  await waitUntilUp(url, child, () => stderr);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      resolve();
    }),
  );
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  return {
    url,
    port,
    dataDir,
    child,
    log: () => log,
    async token(scope, name) {
      const result = await firn([
        'cache',
        'token',
        'create',
        '--data',
        dataDir,
        '--name',
        name ?? `t${++tokenCounter}-${process.pid}`,
        '--scope',
        scope,
      ]);
      if (result.code !== 0) throw new Error(`token create failed: ${result.stderr}`);
      return result.stdout.toString('utf8').trim().split('\n').at(-1) ?? '';
    },
    async publicKey() {
      const result = await firn(['cache', 'key', '--data', dataDir]);
      if (result.code !== 0) throw new Error(`cache key failed: ${result.stderr}`);
      return result.stdout.toString('utf8').trim();
    },
    kill,
    stop,
    async [Symbol.asyncDispose]() {
      await kill();
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function waitUntilUp(url: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null)
      throw new Error(`firn serve exited with ${child.exitCode}: ${stderr()}`);
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`firn serve did not come up within 20 s: ${stderr()}`);
}

/**
 * Spawning programs (nix, ssh, xz, …) with an AbortSignal, captured stdout and a bounded
 * stderr tail, so a chatty child can never fill memory and a failure says what the child said.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { firnError } from '../errors.ts';

const STDERR_TAIL_BYTES = 64 * 1024;

export interface RunOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly input?: string | Uint8Array;
  readonly signal?: AbortSignal;
  /** Largest stdout kept in memory; more is an error (use a stream for big outputs). */
  readonly maxStdout?: number;
}

export interface RunResult {
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Runs `command` to completion and returns what it printed, whatever its exit code. */
export function run(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const maxStdout = options.maxStdout ?? 256 * 1024 * 1024;
  const spawnOptions: SpawnOptions = { stdio: ['pipe', 'pipe', 'pipe'] };
  if (options.cwd !== undefined) spawnOptions.cwd = options.cwd;
  if (options.env !== undefined) spawnOptions.env = options.env;
  if (options.signal !== undefined) spawnOptions.signal = options.signal;
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...args], spawnOptions);
    const chunks: Buffer[] = [];
    let stdoutBytes = 0;
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > maxStdout) {
        child.kill('SIGKILL');
        return;
      }
      chunks.push(chunk);
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-STDERR_TAIL_BYTES);
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') {
        reject(
          firnError(
            'FIRN_E_SUBPROCESS',
            `cannot run '${command}': it is not installed or not on PATH`,
            {
              cause: error,
              hint: `install ${command} (on Debian: apt-get install ${command === 'nix' || command.startsWith('nix-') ? 'nix-bin' : command})`,
            },
          ),
        );
      } else reject(error);
    });
    child.on('close', (code, signal) => {
      if (stdoutBytes > maxStdout) {
        reject(firnError('FIRN_E_SUBPROCESS', `'${command}' printed more than ${maxStdout} bytes`));
        return;
      }
      resolve({ code: code ?? -1, signal, stdout: Buffer.concat(chunks), stderr });
    });
    child.stdin?.on('error', () => {
      // The child may exit without reading its input; its exit status tells what happened.
    });
    child.stdin?.end(options.input);
  });
}

/** Like `run`, but a non-zero exit is a FIRN_E_SUBPROCESS error quoting the end of stderr. */
export async function runChecked(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    const tail = result.stderr.trim().split('\n').slice(-8).join('\n');
    throw firnError(
      'FIRN_E_SUBPROCESS',
      `'${command} ${args.join(' ')}' failed with ${result.signal ?? `exit code ${result.code}`}${tail === '' ? '' : `:\n${tail}`}`,
    );
  }
  return result;
}

/**
 * A program that filters bytes (xz -dc, bzip2 -dc, zstd) as a Duplex stream. The stream fails
 * with FIRN_E_SUBPROCESS, quoting the program's stderr, if the program exits non-zero; it ends
 * only after the program has exited cleanly, so a consumer never mistakes a crash for EOF.
 */
import { spawn } from 'node:child_process';
import { Duplex, PassThrough } from 'node:stream';
import { firnError } from '../errors.ts';

export function spawnFilter(command: string, args: readonly string[]): Duplex {
  const child = spawn(command, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const output = new PassThrough({ highWaterMark: 1 << 20 });
  let stderr = '';
  let exited = false;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4096);
  });
  child.stdout.pipe(output, { end: false });
  const duplex = Duplex.from({ writable: child.stdin, readable: output });
  const fail = (error: Error): void => {
    if (!duplex.destroyed) duplex.destroy(error);
  };
  child.on('error', (error: NodeJS.ErrnoException) => {
    fail(
      firnError('FIRN_E_SUBPROCESS', `cannot run '${command}': ${error.message}`, {
        cause: error,
        hint: error.code === 'ENOENT' ? `install ${command}` : undefined,
      }),
    );
  });
  child.on('close', (code, signal) => {
    exited = true;
    if (code === 0) {
      output.end();
      return;
    }
    const why = stderr.trim() === '' ? (signal ?? `exit code ${code ?? '?'}`) : stderr.trim();
    fail(firnError('FIRN_E_SUBPROCESS', `'${command} ${args.join(' ')}' failed: ${why}`));
  });
  child.stdin.on('error', () => {
    // EPIPE when the program quits early; its exit status (above) says why.
  });
  duplex.on('close', () => {
    if (!exited) child.kill('SIGKILL');
  });
  return duplex;
}

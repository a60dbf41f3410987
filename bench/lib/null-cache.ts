/**
 * The floor for `nix copy --to http://…` on this machine: an HTTP binary cache that stores
 * nothing. Every narinfo and NAR lookup is a 404, `nix-cache-info` is answered, every PUT body is
 * read and thrown away. No verification, no disk, no index — whatever time `nix copy` takes
 * against it is the client's own cost of uploading over HTTP, which no server can remove.
 *
 *   node bench/lib/null-cache.ts PORT     # as a process of its own, like the servers it stands beside
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../test/helpers/server.ts';

const CACHE_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n';

function serve(port: number): void {
  createServer((request, response) => {
    if (request.method === 'PUT') {
      request.resume();
      request.once('end', () => {
        response.writeHead(200, { 'content-length': 0 });
        response.end();
      });
      return;
    }
    if (request.url === '/nix-cache-info') {
      response.writeHead(200, {
        'content-type': 'text/x-nix-cache-info',
        'content-length': Buffer.byteLength(CACHE_INFO),
      });
      response.end(CACHE_INFO);
      return;
    }
    response.writeHead(404, { 'content-length': 0 });
    response.end();
  }).listen(port, '127.0.0.1');
}

export interface NullCache {
  readonly url: string;
  stop(): Promise<void>;
}

/** Starts the null cache as a child process and waits until it answers. */
export async function startNullCache(): Promise<NullCache> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    [fileURLToPath(import.meta.url), String(port)],
    {
      stdio: 'ignore',
    },
  );
  const url = `http://127.0.0.1:${port}`;
  for (let attempt = 0; ; attempt++) {
    try {
      if ((await fetch(`${url}/nix-cache-info`)).ok) break;
    } catch {
      if (attempt > 200) throw new Error('the null cache did not start');
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  return {
    url,
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => {
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) serve(Number(process.argv[2]));

/**
 * nginx serving a directory as static files on a loopback port: the reference a binary cache
 * made by `nix copy --to file://DIR` would get from any web server. The configuration is the
 * usual one for static files (sendfile, tcp_nopush, keep-alive) with the access log off.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../../test/helpers/server.ts';
import { childPids, procStatusKb } from './procs.ts';

export interface Nginx {
  readonly url: string;
  /** The master and its workers. */
  readonly pids: () => number[];
  /** Highest VmHWM (kB) of any one nginx process seen so far. */
  peakKb(): number;
  stop(): Promise<void>;
}

/** `accessLog`: a file nginx writes its default access line to per request (off otherwise). */
export async function startNginx(
  root: string,
  prefix: string,
  options: { readonly accessLog?: string } = {},
): Promise<Nginx> {
  const port = await freePort();
  mkdirSync(join(prefix, 'logs'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(
    conf,
    `# Written by bench/serve.ts: a minimal static-file server for a file:// binary cache.
daemon off;
master_process on;
user root;
worker_processes auto;
pid ${join(prefix, 'nginx.pid')};
error_log ${join(prefix, 'logs', 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log ${options.accessLog ?? 'off'};
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  types { text/x-nix-narinfo narinfo; text/x-nix-cache-info nix-cache-info; }
  default_type application/octet-stream;
  client_body_temp_path ${join(prefix, 'tmp')};
  proxy_temp_path ${join(prefix, 'tmp')};
  fastcgi_temp_path ${join(prefix, 'tmp')};
  uwsgi_temp_path ${join(prefix, 'tmp')};
  scgi_temp_path ${join(prefix, 'tmp')};
  server {
    listen 127.0.0.1:${port};
    root ${root};
  }
}
`,
  );
  mkdirSync(join(prefix, 'tmp'), { recursive: true });
  const child: ChildProcess = spawn('nginx', ['-c', conf, '-p', prefix], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      resolve();
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
    try {
      if ((await fetch(`${url}/nix-cache-info`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`nginx did not answer within 10 s: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const master = child.pid ?? 0;
  let peak = 0;
  const peakKb = (): number => {
    for (const pid of [master, ...childPids(master)])
      peak = Math.max(peak, procStatusKb(pid, 'VmHWM') ?? 0);
    return peak;
  };
  return {
    url,
    pids: () => [master, ...childPids(master)],
    peakKb,
    async stop() {
      peakKb();
      // SIGQUIT is nginx's graceful stop.
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGQUIT');
      await exited;
    },
  };
}

/**
 * firn behind TLS, the way docs/guide.md tells users to set it up: nginx with the guide's proxy
 * settings (HTTP/2, unbuffered streaming, no body size limit) in front of `firn serve`, a
 * self-signed certificate the clients are told to trust. Through it: `nix copy --to https://…`
 * and `firn push` upload, `nix copy --from https://…` substitutes into a fresh store, and an
 * upload without a token is still refused.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runChecked } from '../../src/process/run.ts';
import { firn } from '../helpers/firn.ts';
import { makeNixEnv, type NixEnv } from '../helpers/nix.ts';
import { freePort, startTestServer, type TestServer } from '../helpers/server.ts';
import { buildShape, cacheMissing, SANDBOX_PATHS, substitute } from '../push/fixtures.ts';

/** The proxy block of docs/guide.md, with test paths and ports. */
function nginxConf(prefix: string, port: number, upstream: string): string {
  return `daemon off;
master_process off;
user root;
pid ${join(prefix, 'nginx.pid')};
error_log ${join(prefix, 'error.log')} warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${join(prefix, 'tmp')};
  proxy_temp_path ${join(prefix, 'tmp')};
  fastcgi_temp_path ${join(prefix, 'tmp')};
  uwsgi_temp_path ${join(prefix, 'tmp')};
  scgi_temp_path ${join(prefix, 'tmp')};
  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${join(prefix, 'cert.pem')};
    ssl_certificate_key ${join(prefix, 'key.pem')};
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    location / {
      proxy_pass ${upstream};
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
`;
}

async function waitForHttps(url: string, ca: string, nginx: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const probe = await runChecked('curl', ['-s', '--cacert', ca, `${url}/nix-cache-info`]).then(
      (result) => result.stdout.toString('utf8'),
      () => '',
    );
    if (probe.includes('StoreDir')) return;
    if (Date.now() > deadline) throw new Error(`nginx did not come up: ${nginx()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('firn serve behind an nginx TLS proxy (as docs/guide.md sets it up)', () => {
  let work: string;
  let nix: NixEnv;
  let server: TestServer;
  let nginx: ChildProcess;
  let nginxErr = '';
  let url: string;
  let ca: string;
  let token: string;
  const store = (): string => join(work, 'store');
  /** Undoes what before() got to, newest first: a half-started setup is cleaned up too. */
  const cleanups: (() => unknown)[] = [];

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'firn-tls-'));
    const prefix = join(work, 'nginx');
    mkdirSync(join(prefix, 'tmp'), { recursive: true });
    ca = join(prefix, 'cert.pem');
    await runChecked('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-days',
      '1',
      '-keyout',
      join(prefix, 'key.pem'),
      '-out',
      ca,
    ]);
    server = await startTestServer();
    const started = server;
    cleanups.push(() => started[Symbol.asyncDispose]());
    token = await server.token('push');
    const port = await freePort();
    writeFileSync(join(prefix, 'nginx.conf'), nginxConf(prefix, port, server.url));
    nginx = spawn('nginx', ['-c', join(prefix, 'nginx.conf'), '-p', prefix], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const proxy = nginx;
    cleanups.push(() => proxy.kill('SIGKILL'));
    nginx.stderr?.setEncoding('utf8').on('data', (chunk: string) => (nginxErr += chunk));
    url = `https://127.0.0.1:${port}`;
    await waitForHttps(url, ca, () => nginxErr + readLog(join(prefix, 'error.log')));
    nix = makeNixEnv(
      [
        `extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}`,
        `netrc-file = ${join(work, 'netrc')}`,
      ].join('\n'),
    );
    const made = nix;
    cleanups.push(() => {
      made[Symbol.dispose]();
    });
    // Nix 2.8 takes extra CAs from the environment only (newer Nix also has `ssl-cert-file`).
    nix.env.NIX_SSL_CERT_FILE = ca;
    writeFileSync(join(work, 'netrc'), `machine 127.0.0.1 login firn password ${token}\n`);
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  test('nix copy --to https:// uploads through the proxy; a fresh store substitutes it', async () => {
    const built = await buildShape(nix, {
      dir: work,
      store: store(),
      salt: randomUUID(),
      shape: { mids: 3, blobs: 1, blobBytes: 3 * 1024 * 1024, extra: 0 },
    });
    await nix.nix('nix', [
      'copy',
      '--store',
      store(),
      '--to',
      `${url}?compression=zstd`,
      built.top,
    ]);
    assert.deepEqual(await cacheMissing(server.url, built.paths), []);
    // Another machine: the uploader's own Nix keeps the narinfos it sent (without the cache's
    // signature) in its narinfo disk cache and would trust those instead (docs/troubleshooting.md).
    using other = makeNixEnv();
    other.env.NIX_SSL_CERT_FILE = ca;
    await substitute(other, {
      store: join(work, 'fresh-nix'),
      url,
      key: await server.publicKey(),
      paths: [built.top],
    });
  });

  test('firn push over https (the CA from NODE_EXTRA_CA_CERTS), then substituted', async () => {
    const built = await buildShape(nix, {
      dir: work,
      store: store(),
      salt: randomUUID(),
      shape: { mids: 4, blobs: 1, blobBytes: 2 * 1024 * 1024, extra: 0 },
    });
    const result = await firn(['push', '--cache', url, '--store', store(), built.top], {
      env: { ...nix.env, FIRN_TOKEN: token, NODE_EXTRA_CA_CERTS: ca },
    });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await cacheMissing(server.url, built.paths), []);
    await substitute(nix, {
      store: join(work, 'fresh-push'),
      url,
      key: await server.publicKey(),
      paths: [built.top],
    });
  });

  test('without the CA: FIRN_E_CACHE_TLS at once, not retried; without a token: 401', async () => {
    const built = await buildShape(nix, {
      dir: work,
      store: store(),
      salt: randomUUID(),
      shape: { mids: 0, blobs: 0, blobBytes: 0, extra: 1 },
    });
    const untrusted = await firn(['push', '--cache', url, '--store', store(), ...built.extra], {
      env: { ...nix.env, FIRN_TOKEN: token, NODE_EXTRA_CA_CERTS: '' },
    });
    assert.equal(untrusted.code, 69, untrusted.stderr);
    assert.match(untrusted.stderr, /TLS certificate firn does not trust.*SELF_SIGNED/);
    assert.match(untrusted.stderr, /\[FIRN_E_CACHE_TLS\]\nhint: .*NODE_EXTRA_CA_CERTS/);
    assert.doesNotMatch(untrusted.stderr, /retry|times/, 'a certificate error is not retried');
    const anonymous = await firn(['push', '--cache', url, '--store', store(), ...built.extra], {
      env: {
        ...nix.env,
        FIRN_TOKEN: '',
        NODE_EXTRA_CA_CERTS: ca,
        NIX_CONF_DIR: join(work, 'nowhere'),
      },
    });
    assert.equal(anonymous.code, 77, anonymous.stderr);
    assert.match(anonymous.stderr, /FIRN_E_AUTH_REQUIRED/);
    assert.deepEqual(
      await cacheMissing(server.url, built.extra),
      built.extra.map((path) => path.slice('/nix/store/'.length, '/nix/store/'.length + 32)),
    );
  });
});

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

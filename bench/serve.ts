/**
 * The binary cache: `firn serve` against nginx serving the same cache as static files, in one
 * run, on the same data, over loopback only.
 *
 *   node bench/serve.ts                      # full run (about 3 minutes)
 *   FIRN_BENCH_QUICK=1 node bench/serve.ts   # small smoke run (under a minute)
 *
 * Builds a fresh closure (a few hundred small paths and one large path, plus a separate huge
 * path) in a chroot store, then measures:
 *   1. uploads: `nix copy --to http://firn?compression=zstd` vs `--to file://DIR?compression=zstd`,
 *      and into a null HTTP cache that stores nothing (bench/lib/null-cache.ts: the client's floor)
 *      of that closure into empty caches, wall time (median of FIRN_BENCH_REPS);
 *   2. narinfo GETs: wrk, 64 connections, rotating over every narinfo: req/s, p99 and server CPU
 *      per request, firn at --log-level warn (no access log) and info (access log to a file)
 *      vs nginx;
 *   3. NAR downloads: 4 parallel curl downloads of the large NAR, MB/s;
 *   4. peak RSS (VmHWM) of every firn server process through all of it, including the huge path
 *      uploaded and downloaded.
 * Prints a markdown report on stdout; progress goes to stderr. See bench/README.md.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeNixEnv } from '../test/helpers/nix.ts';
import { SANDBOX_PATHS } from '../test/push/fixtures.ts';
import { buildClosure, hashPart, narinfoUrls, type Sizes } from './lib/closure.ts';
import { startFirn, type BenchServer } from './lib/firn-server.ts';
import { startNginx, type Nginx } from './lib/nginx.ts';
import { startNullCache, type NullCache } from './lib/null-cache.ts';
import { cpuSeconds, loadAverage, median, mustRun, requireTools } from './lib/procs.ts';
import { machineFacts, ratio, table, yesNo, type Row } from './lib/report.ts';
import { runWrk, writeRotatingScript, type WrkResult } from './lib/wrk.ts';

const MiB = 1024 * 1024;
const env = process.env;
const QUICK = env.FIRN_BENCH_QUICK === '1';

function setting(name: string, full: number, quick: number): number {
  const value = env[name];
  if (value === undefined || value === '') return QUICK ? quick : full;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0) throw new Error(`${name}=${value} is not a number`);
  return parsed;
}

const SIZES: Sizes = {
  smallPaths: setting('FIRN_BENCH_SMALL_PATHS', 300, 40),
  largeBytes: setting('FIRN_BENCH_LARGE_MIB', 256, 32) * MiB,
  hugeBytes: setting('FIRN_BENCH_HUGE_MIB', 2048, 256) * MiB,
};
const WRK_SECONDS = setting('FIRN_BENCH_WRK_SECONDS', 10, 3);
const REPS = Math.max(1, setting('FIRN_BENCH_REPS', 3, 1));
const CONNECTIONS = 64;
const WRK_THREADS = 2;
const DOWNLOADS = 4;
const DOWNLOAD_REPS = 3;

const GOALS = { narinfo: 0.8, download: 0.8, upload: 1.2, rssMb: 200 };

const started = performance.now();
function note(message: string): void {
  const seconds = ((performance.now() - started) / 1000).toFixed(0).padStart(4);
  process.stderr.write(`[${seconds} s] ${message}\n`);
}

interface Run {
  readonly dir: string;
  readonly nixEnv: NodeJS.ProcessEnv;
  readonly netrc: string;
  /** Every firn server started, for the peak-memory row. */
  readonly servers: BenchServer[];
}

let xdgCounter = 0;

/** `nix copy` with its own empty narinfo cache, so no earlier answer is reused. */
async function nixCopy(run: Run, store: string, to: string, path: string): Promise<number> {
  const copyEnv = { ...run.nixEnv, XDG_CACHE_HOME: join(run.dir, `xdg-${++xdgCounter}`) };
  const exit = await mustRun('nix', ['copy', '--store', store, '--to', to, path], copyEnv);
  return exit.seconds;
}

async function firnServer(
  run: Run,
  dataDir: string,
  logLevel: 'warn' | 'info',
): Promise<BenchServer> {
  const server = await startFirn({
    dataDir,
    logFile: join(run.dir, `firn-${logLevel}.log`),
    logLevel,
  });
  run.servers.push(server);
  const token = await server.token('push', `bench-${run.servers.length}`);
  writeFileSync(run.netrc, `machine 127.0.0.1\nlogin firn\npassword ${token}\n`, { mode: 0o600 });
  return server;
}

/** CPU seconds used so far by a server's processes (nginx: master and workers). */
type CpuMeter = () => number;

function meter(pids: () => readonly number[]): CpuMeter {
  return () => pids().reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

interface Download {
  readonly mbPerSecond: number;
  readonly cpuSeconds: number;
}

/** DOWNLOADS curl clients fetching `url` at once: MB/s over the whole wall time. */
async function parallelDownload(url: string, bytes: number, cpu: CpuMeter): Promise<Download> {
  const cpuBefore = cpu();
  const begin = performance.now();
  const exits = await Promise.all(
    Array.from({ length: DOWNLOADS }, () =>
      mustRun('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url]),
    ),
  );
  const seconds = (performance.now() - begin) / 1000;
  for (const exit of exits) {
    if (exit.stdout !== `200 ${bytes}`)
      throw new Error(`download of ${url} gave '${exit.stdout}', expected '200 ${bytes}'`);
  }
  return { mbPerSecond: (DOWNLOADS * bytes) / seconds / 1e6, cpuSeconds: cpu() - cpuBefore };
}

/** The `URL:` of a narinfo, e.g. `nar/1abc….nar.zst`. */
function narUrlOf(narinfo: string): string {
  const match = /^URL: (.+)$/m.exec(narinfo);
  if (match?.[1] === undefined) throw new Error(`narinfo without URL:\n${narinfo}`);
  return match[1];
}

async function fetchText(url: string): Promise<string> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
  return response.text();
}

interface NarinfoLoad extends WrkResult {
  /** Server CPU time per request, in µs: less sensitive than req/s to other load on the box. */
  readonly cpuUsPerRequest: number;
}

async function narinfoLoad(
  label: string,
  url: string,
  script: string,
  cpu: CpuMeter,
): Promise<NarinfoLoad> {
  const options = { url, script, connections: CONNECTIONS, threads: WRK_THREADS };
  // A short warm-up first: JIT, page cache, keep-alive connections.
  await runWrk({ ...options, seconds: Math.min(2, WRK_SECONDS) });
  const cpuBefore = cpu();
  const result = await runWrk({ ...options, seconds: WRK_SECONDS });
  const cpuUsPerRequest = ((cpu() - cpuBefore) * 1e6) / result.requests;
  if (result.errors > 0) throw new Error(`${label}: ${result.errors} failed requests under wrk`);
  note(
    `${label}: ${result.requestsPerSecond.toFixed(0)} req/s, p99 ${result.p99Ms.toFixed(2)} ms, ${cpuUsPerRequest.toFixed(0)} µs CPU/request`,
  );
  return { ...result, cpuUsPerRequest };
}

function commandLine(): string {
  const vars = Object.keys(env)
    .filter((name) => name.startsWith('FIRN_BENCH_'))
    .sort()
    .map((name) => `${name}=${env[name] ?? ''}`);
  return [...vars, 'node', 'bench/serve.ts', ...process.argv.slice(2)].join(' ');
}

const seconds = (values: readonly number[]): string => values.map((s) => s.toFixed(2)).join(', ');

async function main(): Promise<void> {
  requireTools([
    { command: 'nginx', pkg: 'nginx-light' },
    { command: 'wrk', pkg: 'wrk' },
    { command: 'curl', pkg: 'curl' },
    { command: 'nix', pkg: 'nix-bin' },
    { command: 'nix-build', pkg: 'nix-bin' },
  ]);
  const loadAtStart = loadAverage();
  const dir = env.FIRN_BENCH_DIR ?? mkdtempSync(join(tmpdir(), 'firn-bench-serve-'));
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  const netrc = join(dir, 'netrc');
  const nix = makeNixEnv(
    `extra-sandbox-paths = ${SANDBOX_PATHS.join(' ')}\nnetrc-file = ${netrc}\nmax-jobs = 4`,
  );
  const run: Run = { dir, nixEnv: nix.env, netrc, servers: [] };
  let nginx: Nginx | undefined;
  let live: BenchServer | undefined;
  let nullCache: NullCache | undefined;
  try {
    note(
      `building ${SIZES.smallPaths} small paths, a ${SIZES.largeBytes / MiB} MiB one and a ${SIZES.hugeBytes / MiB} MiB one in ${dir}`,
    );
    const closure = await buildClosure({ dir, env: nix.env, salt: randomUUID(), sizes: SIZES });
    note(`closure: ${closure.paths.length} paths`);

    // 1. Uploads, alternating which goes first so neither always meets a warmer page cache.
    const uploadFirn: number[] = [];
    const uploadFile: number[] = [];
    /** The same closure into a cache that stores nothing: the client's own floor. */
    const uploadNull: number[] = [];
    nullCache = await startNullCache();
    /** Server CPU seconds of each upload to firn. */
    const uploadFirnCpu: number[] = [];
    let fileCache = '';
    let firnData = '';
    for (let rep = 0; rep < REPS; rep++) {
      fileCache = join(dir, `file-cache-${rep}`);
      firnData = join(dir, `firn-data-${rep}`);
      const server = await firnServer(run, firnData, 'warn');
      const toFile = async (): Promise<void> => {
        const to = `file://${fileCache}?compression=zstd`;
        uploadFile.push(await nixCopy(run, closure.store, to, closure.root));
      };
      const toFirn = async (): Promise<void> => {
        const to = `${server.url}?compression=zstd`;
        const cpuBefore = cpuSeconds(server.pid);
        uploadFirn.push(await nixCopy(run, closure.store, to, closure.root));
        uploadFirnCpu.push(cpuSeconds(server.pid) - cpuBefore);
      };
      const cacheUrl = nullCache.url;
      const toNull = async (): Promise<void> => {
        uploadNull.push(
          await nixCopy(run, closure.store, `${cacheUrl}?compression=zstd`, closure.root),
        );
      };
      const order = [toFirn, toFile, toNull];
      for (let i = 0; i < order.length; i++) await order[(i + rep) % order.length]?.();
      note(
        `upload ${rep + 1}/${REPS}: firn ${uploadFirn.at(-1)?.toFixed(2)} s (server CPU ${uploadFirnCpu.at(-1)?.toFixed(2)} s), file:// ${uploadFile.at(-1)?.toFixed(2)} s, null HTTP cache ${uploadNull.at(-1)?.toFixed(2)} s`,
      );
      if (rep < REPS - 1) {
        await server.stop();
        rmSync(firnData, { recursive: true, force: true });
        rmSync(fileCache, { recursive: true, force: true });
      } else live = server;
    }
    await nullCache.stop();
    nullCache = undefined;
    if (live === undefined) throw new Error('no upload ran');
    const warnServer = live;
    // VmHWM only grows: read after each phase, it shows which phase set the peak.
    const phasePeaks: string[] = [];
    const phasePeak = (phase: string): void => {
      phasePeaks.push(`${phase} ${(warnServer.peakKb() / 1024).toFixed(0)}`);
    };
    phasePeak('after uploads');

    // 2. narinfo GETs over the same hash parts on both servers.
    nginx = await startNginx(fileCache, join(dir, 'nginx'));
    const nginxCpu = meter(nginx.pids);
    const firnCpu = meter(() => [warnServer.pid]);
    const urls = narinfoUrls(fileCache);
    const script = join(dir, 'narinfo.lua');
    writeRotatingScript(script, urls);
    const narinfoNginx = await narinfoLoad('narinfo nginx', nginx.url, script, nginxCpu);
    const narinfoWarn = await narinfoLoad('narinfo firn (warn)', warnServer.url, script, firnCpu);

    // 3. NAR downloads of the large path, interleaved.
    const largeHash = hashPart(closure.large);
    const nginxNar = narUrlOf(readFileSync(join(fileCache, `${largeHash}.narinfo`), 'utf8'));
    const firnNar = narUrlOf(await fetchText(`${warnServer.url}/${largeHash}.narinfo`));
    const largeNarBytes = statSync(join(fileCache, nginxNar)).size;
    const downloadFirn: Download[] = [];
    const downloadNginx: Download[] = [];
    for (let rep = 0; rep < DOWNLOAD_REPS; rep++) {
      downloadNginx.push(
        await parallelDownload(`${nginx.url}/${nginxNar}`, largeNarBytes, nginxCpu),
      );
      downloadFirn.push(
        await parallelDownload(`${warnServer.url}/${firnNar}`, largeNarBytes, firnCpu),
      );
    }
    const firnDownload = median(downloadFirn.map((d) => d.mbPerSecond));
    const nginxDownload = median(downloadNginx.map((d) => d.mbPerSecond));
    note(`downloads: firn ${firnDownload.toFixed(0)} MB/s, nginx ${nginxDownload.toFixed(0)} MB/s`);
    phasePeak('narinfo GETs and downloads');
    const downloadedGb = (DOWNLOAD_REPS * DOWNLOADS * largeNarBytes) / 1e9;
    const cpuPerGb = (downloads: readonly Download[]): string =>
      (downloads.reduce((sum, d) => sum + d.cpuSeconds, 0) / downloadedGb).toFixed(2);

    // 4. The huge path through the warn server: upload, then download; file:// for reference.
    const hugeUpload = await nixCopy(
      run,
      closure.store,
      `${warnServer.url}?compression=zstd`,
      closure.huge,
    );
    const hugeFile = join(dir, 'file-cache-huge');
    const hugeUploadFile = await nixCopy(
      run,
      closure.store,
      `file://${hugeFile}?compression=zstd`,
      closure.huge,
    );
    rmSync(hugeFile, { recursive: true, force: true });
    phasePeak('huge upload');
    const hugeNar = narUrlOf(
      await fetchText(`${warnServer.url}/${hashPart(closure.huge)}.narinfo`),
    );
    const hugeHead = await fetch(`${warnServer.url}/${hugeNar}`, { method: 'HEAD' });
    const hugeNarBytes = Number(hugeHead.headers.get('content-length'));
    const hugeBegin = performance.now();
    const hugeDownload = await mustRun('curl', [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code} %{size_download}',
      `${warnServer.url}/${hugeNar}`,
    ]);
    const hugeDownloadSeconds = (performance.now() - hugeBegin) / 1000;
    if (hugeDownload.stdout !== `200 ${hugeNarBytes}`)
      throw new Error(`huge download gave '${hugeDownload.stdout}'`);
    note(
      `huge path: upload ${hugeUpload.toFixed(1)} s (file:// ${hugeUploadFile.toFixed(1)} s), download ${hugeDownloadSeconds.toFixed(1)} s`,
    );
    phasePeak('huge download');
    const warnPeakKb = warnServer.peakKb();
    await warnServer.stop();
    live = undefined;

    // 2b. narinfo GETs with the access log on, same data directory.
    const infoServer = await firnServer(run, firnData, 'info');
    live = infoServer;
    const narinfoInfo = await narinfoLoad(
      'narinfo firn (info)',
      infoServer.url,
      script,
      meter(() => [infoServer.pid]),
    );
    const accessLogBytes = statSync(join(dir, 'firn-info.log')).size;
    await infoServer.stop();
    live = undefined;
    const nginxPeakKb = nginx.peakKb();
    await nginx.stop();
    // 2c. nginx logging every request too (its default), the like-for-like reference for info.
    nginx = await startNginx(fileCache, join(dir, 'nginx-logging'), {
      accessLog: join(dir, 'nginx-access.log'),
    });
    const narinfoNginxLogging = await narinfoLoad(
      'narinfo nginx (access log on)',
      nginx.url,
      script,
      meter(nginx.pids),
    );
    await nginx.stop();
    nginx = undefined;

    const peakKb = Math.max(...run.servers.map((server) => server.peakKb()));
    const firnUpload = median(uploadFirn);
    const fileUpload = median(uploadFile);
    const nullUpload = median(uploadNull);
    const narinfoRow = (level: string, firn: NarinfoLoad): Row[] => [
      {
        metric: `narinfo GET req/s (wrk, ${CONNECTIONS} conns, ${WRK_SECONDS} s, --log-level ${level})`,
        firn: firn.requestsPerSecond.toFixed(0),
        reference: narinfoNginx.requestsPerSecond.toFixed(0),
        ratio: ratio(firn.requestsPerSecond, narinfoNginx.requestsPerSecond),
        goal: `≥ ${GOALS.narinfo}×`,
        met: yesNo(firn.requestsPerSecond >= GOALS.narinfo * narinfoNginx.requestsPerSecond),
      },
      {
        metric: `narinfo GET p99 latency, ms (--log-level ${level})`,
        firn: firn.p99Ms.toFixed(2),
        reference: narinfoNginx.p99Ms.toFixed(2),
        ratio: ratio(firn.p99Ms, narinfoNginx.p99Ms),
        goal: '—',
        met: '—',
      },
    ];
    const rows: Row[] = [
      ...narinfoRow('warn', narinfoWarn),
      ...narinfoRow('info', narinfoInfo),
      {
        metric: `narinfo GET req/s, both logging every request (firn --log-level info; nginx access_log on)`,
        firn: narinfoInfo.requestsPerSecond.toFixed(0),
        reference: narinfoNginxLogging.requestsPerSecond.toFixed(0),
        ratio: ratio(narinfoInfo.requestsPerSecond, narinfoNginxLogging.requestsPerSecond),
        goal: `≥ ${GOALS.narinfo}×`,
        met: yesNo(
          narinfoInfo.requestsPerSecond >= GOALS.narinfo * narinfoNginxLogging.requestsPerSecond,
        ),
      },
      {
        metric: `NAR download MB/s (${DOWNLOADS} parallel × ${(largeNarBytes / MiB).toFixed(0)} MiB)`,
        firn: firnDownload.toFixed(0),
        reference: nginxDownload.toFixed(0),
        ratio: ratio(firnDownload, nginxDownload),
        goal: `≥ ${GOALS.download}×`,
        met: yesNo(firnDownload >= GOALS.download * nginxDownload),
      },
      {
        metric: `upload wall time, s (nix copy of ${closure.paths.length} paths; reference: file://)`,
        firn: firnUpload.toFixed(2),
        reference: fileUpload.toFixed(2),
        ratio: ratio(firnUpload, fileUpload),
        goal: `≤ ${GOALS.upload}×`,
        met: yesNo(firnUpload <= GOALS.upload * fileUpload),
      },
      {
        metric: `the same upload into a null HTTP cache (stores nothing), s; reference: file://`,
        firn: nullUpload.toFixed(2),
        reference: fileUpload.toFixed(2),
        ratio: ratio(nullUpload, fileUpload),
        goal: "(the client's floor)",
        met: '—',
      },
      {
        metric: `peak RSS of the server, MB (all of it, incl. ${(SIZES.hugeBytes / MiB).toFixed(0)} MiB up and down; reference: largest nginx process)`,
        firn: (peakKb / 1024).toFixed(0),
        reference: (nginxPeakKb / 1024).toFixed(0),
        ratio: '—',
        goal: `≤ ${GOALS.rssMb} MB`,
        met: yesNo(peakKb / 1024 <= GOALS.rssMb),
      },
    ];
    const lines = [
      `## firn serve vs nginx (static files)${QUICK ? ' — quick mode' : ''}`,
      '',
      table(rows),
      '',
      'Details:',
      `- narinfo, server CPU per request (µs): nginx ${narinfoNginx.cpuUsPerRequest.toFixed(0)} (all workers), firn warn ${narinfoWarn.cpuUsPerRequest.toFixed(0)}, firn info ${narinfoInfo.cpuUsPerRequest.toFixed(0)}, nginx with access log ${narinfoNginxLogging.cpuUsPerRequest.toFixed(0)}; p50 (ms): nginx ${narinfoNginx.p50Ms.toFixed(2)}, firn warn ${narinfoWarn.p50Ms.toFixed(2)}, firn info ${narinfoInfo.p50Ms.toFixed(2)}; ${urls.length} distinct narinfos; access log written: ${(accessLogBytes / MiB).toFixed(1)} MiB`,
      `- downloads (MB/s), firn: ${downloadFirn.map((d) => d.mbPerSecond.toFixed(0)).join(', ')}; nginx: ${downloadNginx.map((d) => d.mbPerSecond.toFixed(0)).join(', ')}; server CPU per GB sent: firn ${cpuPerGb(downloadFirn)} s, nginx ${cpuPerGb(downloadNginx)} s`,
      `- uploads (s), firn: ${seconds(uploadFirn)}; file://: ${seconds(uploadFile)}; null HTTP cache: ${seconds(uploadNull)} (firn / null ${ratio(firnUpload, nullUpload)}); firn server CPU per upload (s): ${seconds(uploadFirnCpu)}, median ${((median(uploadFirnCpu) * 1e3) / closure.paths.length).toFixed(2)} ms per path`,
      `- huge path (${(hugeNarBytes / MiB).toFixed(0)} MiB NAR): nix copy to firn ${hugeUpload.toFixed(1)} s, to file:// ${hugeUploadFile.toFixed(1)} s (${ratio(hugeUpload, hugeUploadFile)}); one curl download from firn ${hugeDownloadSeconds.toFixed(1)} s (${(hugeNarBytes / hugeDownloadSeconds / 1e6).toFixed(0)} MB/s); peak RSS of that server ${(warnPeakKb / 1024).toFixed(0)} MB`,
      `- peak RSS per firn process in start order (MB): ${run.servers.map((server) => (server.peakKb() / 1024).toFixed(0)).join(', ')}; of the warn server as it grew (MB): ${phasePeaks.join(', ')}`,
      `- wrk: ${WRK_THREADS} threads, ${CONNECTIONS} connections, ${WRK_SECONDS} s after a 2 s warm-up, on the same machine as the servers; nginx: worker_processes auto, sendfile on, access_log off; firn: bin/firn serve, one process`,
      '',
      'Command:',
      '',
      '```',
      commandLine(),
      '```',
      '',
      'Machine:',
      '',
      ...machineFacts(),
      `- load average (1 min) at start ${loadAtStart}, at end ${loadAverage()}`,
      `- total run time: ${((performance.now() - started) / 1000).toFixed(0)} s`,
      '',
    ];
    process.stdout.write(lines.join('\n'));
  } finally {
    await nullCache?.stop();
    await live?.stop();
    await nginx?.stop();
    for (const server of run.servers) await server.stop();
    nix[Symbol.dispose]();
    if (env.FIRN_BENCH_KEEP === '1' || env.FIRN_BENCH_DIR !== undefined) note(`kept ${dir}`);
    else await removeTree(dir);
  }
}

/** The chroot store's files are read-only; make them writable, then remove everything. */
async function removeTree(dir: string): Promise<void> {
  await new Promise<void>((resolve) => {
    spawn('chmod', ['-R', 'u+w', dir], { stdio: 'ignore' }).once('close', () => {
      resolve();
    });
  });
  rmSync(dir, { recursive: true, force: true });
}

main().catch((error: unknown) => {
  process.stderr.write(
    `bench/serve.ts failed: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exitCode = 1;
});

/** Running wrk over a rotating list of URL paths and reading its summary. */
import { writeFileSync } from 'node:fs';
import { mustRun } from './procs.ts';

export interface WrkResult {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly requests: number;
  readonly errors: number;
}

/** A Lua script that sends GET for each of `paths` in turn, each thread from its own offset. */
export function writeRotatingScript(file: string, paths: readonly string[]): void {
  const list = paths.map((path) => `  ${JSON.stringify(path)},`).join('\n');
  writeFileSync(
    file,
    `-- Written by bench/serve.ts: GET each path in turn.
local paths = {
${list}
}
local counter = 1
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("start", threads * 7919)
end
function init(args)
  counter = (start or 1) % #paths
end
function request()
  counter = counter % #paths + 1
  return wrk.format("GET", paths[counter])
end
`,
  );
}

export async function runWrk(options: {
  url: string;
  script: string;
  connections: number;
  threads: number;
  seconds: number;
}): Promise<WrkResult> {
  const exit = await mustRun('wrk', [
    `-t${options.threads}`,
    `-c${options.connections}`,
    `-d${options.seconds}s`,
    '--latency',
    '--timeout',
    '10s',
    '-s',
    options.script,
    options.url,
  ]);
  return parseWrk(exit.stdout);
}

export function parseWrk(text: string): WrkResult {
  const number = (pattern: RegExp): number => {
    const match = pattern.exec(text);
    if (match?.[1] === undefined) throw new Error(`wrk output lacks ${pattern.source}:\n${text}`);
    return Number(match[1]);
  };
  const latency = (percent: number): number => {
    const match = new RegExp(`^\\s*${percent}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(text);
    if (match?.[1] === undefined) throw new Error(`wrk output lacks the ${percent}% latency`);
    const scale = match[2] === 'us' ? 0.001 : match[2] === 's' ? 1000 : 1;
    return Number(match[1]) * scale;
  };
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(
    text,
  );
  const errors =
    Number(non2xx?.[1] ?? 0) +
    (socketErrors === null ? 0 : socketErrors.slice(1).reduce((sum, n) => sum + Number(n), 0));
  return {
    requestsPerSecond: number(/^Requests\/sec:\s+([\d.]+)/m),
    p50Ms: latency(50),
    p99Ms: latency(99),
    requests: number(/^\s*(\d+) requests in/m),
    errors,
  };
}

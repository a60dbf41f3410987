/**
 * FIRN_BUILD_TRACE=1: timestamps of a build's phases on stderr (milliseconds since the process
 * started), to see where the time of a run goes: evaluation, graph, cache check, and per
 * derivation the fetch, build and push. Off by default; costs one branch when off.
 */
const enabled = process.env.FIRN_BUILD_TRACE === '1';

export function trace(what: string, detail = ''): void {
  if (!enabled) return;
  process.stderr.write(`trace ${performance.now().toFixed(0)} ${what} ${detail}\n`);
}

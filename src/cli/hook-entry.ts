/**
 * `firn hook` without arguments, as Nix runs it once per build, comes here straight from
 * bin/firn: the CLI's command table, argument parser and error boundary cost milliseconds of
 * module loading that the hook does without. `firn hook --spool …` or `--help` go through the
 * full CLI (src/cli/commands/hook.ts); both end in the same `hook()`, which never throws.
 */
import { hook } from '../push/hook.ts';

try {
  await hook({ env: process.env, stderr: process.stderr });
} catch (error) {
  // hook() reports its own failures; this is the last guard: a build must never fail here.
  process.stderr.write(`firn hook: ${String(error)}; nothing was queued\n`);
}
process.exitCode = 0;

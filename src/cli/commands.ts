import type { CommandSpec } from './context.ts';

/** The command table. Each module is imported only when its command runs. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'serve',
    summary: 'run the binary cache: verified uploads, signed narinfos',
    load: () => import('./commands/serve.ts'),
  },
  {
    name: 'cache',
    summary: 'manage a cache: tokens, public key, gc, verify',
    load: () => import('./commands/cache.ts'),
  },
  {
    name: 'push',
    summary: 'upload closures to a cache, fast (bulk query, parallel, zstd)',
    load: () => import('./commands/push.ts'),
  },
  {
    name: 'hook',
    summary: "Nix's post-build-hook: queue built paths for upload, return at once",
    load: () => import('./commands/hook.ts'),
  },
  {
    name: 'drain',
    summary: 'upload what the hook queued, with retries (once or as a daemon)',
    load: () => import('./commands/drain.ts'),
  },
  {
    name: 'gen',
    summary: 'derive nix.conf, machines files and NixOS modules from the fleet inventory',
    load: () => import('./commands/gen.ts'),
  },
  {
    name: 'doctor',
    summary: 'check every host of the fleet against its inventory, with a fix for each problem',
    load: () => import('./commands/doctor.ts'),
  },
  {
    name: 'build',
    summary: 'build derivations once each over the fleet, critical path first',
    load: () => import('./commands/build.ts'),
  },
  {
    name: 'nar',
    summary: 'pack, unpack and list NAR archives',
    load: () => import('./commands/nar.ts'),
  },
  {
    name: 'hash',
    summary: 'hash a path like `nix hash path`; convert hash encodings',
    load: () => import('./commands/hash.ts'),
  },
  {
    name: 'key',
    summary: 'generate signing keys; print a public key',
    load: () => import('./commands/key.ts'),
  },
  {
    name: 'narinfo',
    summary: 'sign and verify narinfo files',
    load: () => import('./commands/narinfo.ts'),
  },
  {
    name: 'drv',
    summary: 'show derivations as JSON like `nix show-derivation`',
    load: () => import('./commands/drv.ts'),
  },
];
